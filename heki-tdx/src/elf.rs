//! Loaded module memory against the signed ELF (heki-lvbs-abi.md §5.5 step 5).
//!
//! The guest's module loader copies the sections of the signed `.ko` into
//! module memory, applies relocations and runs the x86 post-relocation fixups
//! (alternatives, retpolines, return thunks, call thunks, IBT sealing, lock
//! prefixes, ftrace NOPs) before `VALIDATE_MODULE`. This module checks that
//! every other byte of a region (`MOD_TEXT`, `MOD_INIT_TEXT`,
//! `MOD_INIT_RODATA`, or any other type the caller asks for) is exactly the
//! signed ELF's byte.
//!
//! Unlike litebox, which compares only the sections named `.text`,
//! `.init.text` and `.init.rodata` at the start of their regions, the whole
//! region is checked: Linux's section layout (`layout_sections`, Linux 6.1 and
//! the 6.4+ `mod_mem_type` split lay sections out identically within a region)
//! is recomputed, so every section that becomes executable (`.text.unlikely`,
//! `.altinstr_replacement`, `.exit.text`, ...) is covered, and the padding
//! between and after sections must be filler (all `0x00` or all `0xCC`).
//!
//! Bytes allowed to differ:
//!
//! * direct relocation sites from every `SHT_RELA` section whose `sh_info`
//!   names a section in the region: `R_X86_64_64`/`PC64` 8 bytes,
//!   `R_X86_64_32`/`32S`/`PC32`/`PLT32` 4 bytes, `R_X86_64_NONE` none; any other
//!   type is an error ([`ElfError::UnknownRelocation`]);
//! * indirect patch sites named by the loader's fixup tables
//!   ([`LINUX_X86_64_SITES`]): each table relocation that points into the
//!   region marks one site whose width comes from the table entry
//!   (`alt_instr::instrlen`, `paravirt_patch_site::len`) or from the original
//!   instruction at the site (a branch is 5 or 6 bytes, `endbr64` 4, a `lock`
//!   prefix 1, a fentry call 5). A table entry pointing at bytes that are not
//!   what the table promises is an error, never a silently wider window.
//!
//! The relocated values themselves are not checked (as in litebox); the C
//! secure kernel's re-link would be the stronger next step.

use crate::abi::{Errno, ModMemType, ToErrno, PAGE_SIZE};
use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use object::elf::{FileHeader64, SectionHeader64, Sym64, SHT_SYMTAB};
use object::read::elf::{FileHeader, SectionHeader, SectionTable, Sym};
use object::read::SymbolIndex;
use object::LittleEndian as LE;

const ET_REL: u16 = 1;
const EM_X86_64: u16 = 62;
const SHT_RELA: u32 = 4;
const SHT_NOBITS: u32 = 8;
const SHT_REL: u32 = 9;
const SHF_WRITE: u64 = 1 << 0;
const SHF_ALLOC: u64 = 1 << 1;
const SHF_EXECINSTR: u64 = 1 << 2;
/// Linux's `SHF_RO_AFTER_INIT`.
const SHF_RO_AFTER_INIT: u64 = 0x0020_0000;

const R_X86_64_NONE: u32 = 0;
const R_X86_64_64: u32 = 1;
const R_X86_64_PC32: u32 = 2;
const R_X86_64_PLT32: u32 = 4;
const R_X86_64_32: u32 = 10;
const R_X86_64_32S: u32 = 11;
const R_X86_64_PC64: u32 = 24;

/// The canonical 5-byte NOP (`nopl 0x0(%rax,%rax,1)`).
pub const NOP5: [u8; 5] = [0x0f, 0x1f, 0x44, 0x00, 0x00];
/// `endbr64`.
pub const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];

/// How wide one loader patch site is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SiteRule {
    /// `call`/`jmp rel32` (5 bytes, 6 with a `cs` prefix) or `jcc rel32` (6 bytes),
    /// decoded from the original bytes (retpoline, return and call-thunk sites).
    Branch,
    /// `call __fentry__` (`E8 rel32`) or the NOP objtool may already have put
    /// there: 5 bytes (ftrace turns it into a NOP at load).
    Fentry,
    /// `endbr64`, sealed at load: 4 bytes.
    Endbr,
    /// A `lock` prefix (`F0`), patched to `ds` on uniprocessor systems: 1 byte.
    Lock,
    /// `-fpatchable-function-entry` padding: the run of `0x90` at the site, at most 16 bytes.
    NopRun,
    /// `struct alt_instr`: `instrlen` bytes at `instr_offset` (12- and 14-byte entries).
    AltInstr,
    /// `struct paravirt_patch_site`: `len` bytes at the site (16- and 8-byte entries).
    ParaInstr,
}

/// A loader fixup table: a section whose relocations point at patch sites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SiteTable {
    /// The table section's name (its relocations are in `.rela<name>`).
    pub section: &'static str,
    /// How wide its sites are.
    pub rule: SiteRule,
}

/// The x86-64 fixup tables Linux 6.1–6.6 processes before `VALIDATE_MODULE`:
/// the seven §5.5 lists plus `__mcount_loc` (ftrace runs before the HEKI
/// hook) and `.smp_locks`.
pub const LINUX_X86_64_SITES: &[SiteTable] = &[
    SiteTable {
        section: ".altinstructions",
        rule: SiteRule::AltInstr,
    },
    SiteTable {
        section: ".parainstructions",
        rule: SiteRule::ParaInstr,
    },
    SiteTable {
        section: ".retpoline_sites",
        rule: SiteRule::Branch,
    },
    SiteTable {
        section: ".return_sites",
        rule: SiteRule::Branch,
    },
    SiteTable {
        section: ".call_sites",
        rule: SiteRule::Branch,
    },
    SiteTable {
        section: ".ibt_endbr_seal",
        rule: SiteRule::Endbr,
    },
    SiteTable {
        section: "__patchable_function_entries",
        rule: SiteRule::NopRun,
    },
    SiteTable {
        section: "__mcount_loc",
        rule: SiteRule::Fentry,
    },
    SiteTable {
        section: ".smp_locks",
        rule: SiteRule::Lock,
    },
];

/// Loader configuration that changes the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayoutConfig {
    /// `CONFIG_MODULE_UNLOAD`: when off, `.exit*` sections are laid out as init sections.
    pub module_unload: bool,
}

impl Default for LayoutConfig {
    fn default() -> Self {
        LayoutConfig {
            module_unload: true,
        }
    }
}

/// What [`ModuleElf::check_region`] accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckConfig {
    /// Layout rules.
    pub layout: LayoutConfig,
    /// Fixup tables whose sites may differ.
    pub sites: &'static [SiteTable],
    /// Bytes allowed as padding (each gap must be one of them throughout).
    pub fillers: &'static [u8],
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            layout: LayoutConfig::default(),
            sites: LINUX_X86_64_SITES,
            fillers: &[0x00, 0xcc],
        }
    }
}

/// Why a module ELF or a loaded region was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// The file is not a well-formed ELF64 little-endian file.
    Malformed(&'static str),
    /// Not `ET_REL` for `EM_X86_64`.
    NotX86_64Relocatable,
    /// A section's alignment is not a power of two.
    BadAlignment {
        /// Section name.
        section: String,
        /// Its `sh_addralign`.
        align: u64,
    },
    /// The layout overflows.
    TooLarge,
    /// An `SHT_REL` (no addend) section applies to a checked section; x86-64 Linux refuses them.
    RelWithoutAddend {
        /// The relocation section.
        section: String,
    },
    /// A relocation type the checker does not know.
    UnknownRelocation {
        /// The section the relocation applies to.
        section: String,
        /// Offset in that section.
        offset: u64,
        /// `ELF64_R_TYPE`.
        r_type: u32,
    },
    /// A relocation or site reaches outside its section.
    OutOfSection {
        /// The section.
        section: String,
        /// Offset in that section.
        offset: u64,
    },
    /// A relocation names a symbol that does not exist.
    BadSymbol {
        /// The relocation section.
        section: String,
        /// The symbol index.
        index: u32,
    },
    /// A fixup table's entries do not have a known layout.
    TableLayout {
        /// The table.
        table: &'static str,
    },
    /// A fixup table points at bytes that are not the instruction it patches.
    UnexpectedSiteBytes {
        /// The table.
        table: &'static str,
        /// The section holding the site.
        section: String,
        /// Offset of the site in it.
        offset: u64,
    },
    /// The loaded region is smaller than the layout or more than a page larger.
    RegionSize {
        /// The region.
        kind: ModMemType,
        /// Size of the layout.
        expected: u64,
        /// Bytes supplied.
        loaded: u64,
    },
    /// A byte outside every relocation and patch site differs from the ELF.
    Mismatch {
        /// The region.
        kind: ModMemType,
        /// The section holding the byte.
        section: String,
        /// Offset in that section.
        offset: u64,
        /// The signed byte.
        expected: u8,
        /// The loaded byte.
        found: u8,
        /// How many bytes of the region differ in total.
        count: u64,
    },
    /// Padding that is not a uniform filler.
    BadPadding {
        /// The region.
        kind: ModMemType,
        /// Offset in the region.
        offset: u64,
        /// The byte found.
        found: u8,
    },
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfError::Malformed(w) => write!(f, "malformed ELF: {w}"),
            ElfError::NotX86_64Relocatable => f.write_str("not an x86-64 relocatable ELF"),
            ElfError::BadAlignment { section, align } => {
                write!(
                    f,
                    "section {section}: alignment {align:#x} is not a power of two"
                )
            }
            ElfError::TooLarge => f.write_str("module layout overflows"),
            ElfError::RelWithoutAddend { section } => {
                write!(
                    f,
                    "{section}: SHT_REL relocations are not supported on x86-64"
                )
            }
            ElfError::UnknownRelocation {
                section,
                offset,
                r_type,
            } => write!(f, "{section}+{offset:#x}: unknown relocation type {r_type}"),
            ElfError::OutOfSection { section, offset } => {
                write!(
                    f,
                    "{section}+{offset:#x}: relocation or site outside the section"
                )
            }
            ElfError::BadSymbol { section, index } => {
                write!(f, "{section}: relocation names missing symbol {index}")
            }
            ElfError::TableLayout { table } => write!(f, "{table}: unknown entry layout"),
            ElfError::UnexpectedSiteBytes {
                table,
                section,
                offset,
            } => write!(
                f,
                "{table} points at {section}+{offset:#x}, which is not the instruction it patches"
            ),
            ElfError::RegionSize {
                kind,
                expected,
                loaded,
            } => write!(
                f,
                "{kind:?}: {loaded:#x} bytes loaded, layout needs {expected:#x} (page rounded)"
            ),
            ElfError::Mismatch {
                kind,
                section,
                offset,
                expected,
                found,
                count,
            } => write!(
                f,
                "{kind:?}: {section}+{offset:#x} is {found:#04x}, signed ELF has {expected:#04x} \
                 ({count} differing bytes outside relocations)"
            ),
            ElfError::BadPadding {
                kind,
                offset,
                found,
            } => write!(
                f,
                "{kind:?}: padding byte {found:#04x} at region offset {offset:#x}"
            ),
        }
    }
}

impl ToErrno for ElfError {
    fn errno(&self) -> Errno {
        match self {
            ElfError::TooLarge => Errno::ERANGE,
            _ => Errno::EINVAL,
        }
    }
}

/// One section header, as the checker uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// Name (lossy UTF-8).
    pub name: String,
    /// `sh_type`.
    pub sh_type: u32,
    /// `sh_flags` as the loader sees them (after Linux's adjustments).
    pub flags: u64,
    /// File offset.
    pub offset: u64,
    /// Size.
    pub size: u64,
    /// Alignment (at least 1).
    pub align: u64,
    /// `sh_link`.
    pub link: u32,
    /// `sh_info`.
    pub info: u32,
}

impl Section {
    fn is_init(&self, cfg: &LayoutConfig) -> bool {
        self.name.starts_with(".init") || (!cfg.module_unload && self.name.starts_with(".exit"))
    }
}

/// A section placed in a region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Section index.
    pub section: usize,
    /// Offset in the region.
    pub offset: u64,
    /// Size.
    pub size: u64,
}

/// The sections of one region, as Linux lays them out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionLayout {
    /// The region.
    pub kind: ModMemType,
    /// Bytes up to the end of the last section (before page rounding).
    pub size: u64,
    /// Its sections, in layout order.
    pub placements: Vec<Placement>,
}

/// What a successful region check looked at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Bytes compared with the ELF and equal.
    pub compared: u64,
    /// Bytes inside relocation or patch-site windows (not compared).
    pub relocated: u64,
    /// Of those, bytes that actually differ from the ELF.
    pub relocated_changed: u64,
    /// Padding bytes (checked to be filler).
    pub padding: u64,
}

#[derive(Clone, Copy, Debug)]
struct SymInfo {
    section: Option<usize>,
    value: u64,
}

#[derive(Clone, Copy, Debug)]
struct Reloc {
    offset: u64,
    r_type: u32,
    sym: u32,
    addend: i64,
}

/// A parsed, signed module ELF.
#[derive(Clone, Debug)]
pub struct ModuleElf<'a> {
    data: &'a [u8],
    sections: Vec<Section>,
    symbols: Vec<SymInfo>,
    symtab: Option<usize>,
}

/// Largest region [`ModuleElf::patchable_ranges`] lays out (the module file
/// itself is capped at 64 MiB by the caller).
pub const MAX_REGION: usize = 256 << 20;

/// Byte classes of a region (see [`ModuleElf::classify`]).
const CMP: u8 = 0;
const WINDOW: u8 = 1;
const PAD: u8 = 2;

fn align_up(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

impl<'a> ModuleElf<'a> {
    /// Parses the section headers and the symbol table of `data` (the module
    /// file without its signature trailer).
    pub fn parse(data: &'a [u8]) -> Result<Self, ElfError> {
        let header =
            FileHeader64::<LE>::parse(data).map_err(|_| ElfError::Malformed("ELF header"))?;
        let endian = header
            .endian()
            .map_err(|_| ElfError::Malformed("ELF byte order"))?;
        if header.e_type(endian).0 != ET_REL || header.e_machine(endian).0 != EM_X86_64 {
            return Err(ElfError::NotX86_64Relocatable);
        }
        let shdrs: &[SectionHeader64<LE>] = header
            .section_headers(endian, data)
            .map_err(|_| ElfError::Malformed("section headers"))?;
        let strings = header
            .section_strings(endian, data, shdrs)
            .map_err(|_| ElfError::Malformed("section name table"))?;
        let mut sections = Vec::with_capacity(shdrs.len());
        for sh in shdrs {
            let name = sh
                .name(endian, strings)
                .map_err(|_| ElfError::Malformed("section name"))?;
            let name = String::from_utf8_lossy(name).into_owned();
            let align = sh.sh_addralign(endian).max(1);
            if !align.is_power_of_two() {
                return Err(ElfError::BadAlignment {
                    section: name,
                    align,
                });
            }
            let mut flags = sh.sh_flags(endian).0;
            // The loader's own adjustments (setup_load_info, layout_and_allocate).
            match name.as_str() {
                ".modinfo" | "__versions" | ".data..percpu" => flags &= !SHF_ALLOC,
                ".data..ro_after_init" | "__jump_table" => flags |= SHF_RO_AFTER_INIT,
                _ => {}
            }
            let s = Section {
                name,
                sh_type: sh.sh_type(endian).0,
                flags,
                offset: sh.sh_offset(endian),
                size: sh.sh_size(endian),
                align,
                link: sh.sh_link(endian),
                info: sh.sh_info(endian),
            };
            if s.sh_type != SHT_NOBITS
                && s.offset
                    .checked_add(s.size)
                    .is_none_or(|end| end > data.len() as u64)
            {
                return Err(ElfError::Malformed("section data outside the file"));
            }
            sections.push(s);
        }
        let table: SectionTable<'_, FileHeader64<LE>, &[u8]> = SectionTable::new(shdrs, strings);
        let symtab_index = sections.iter().position(|s| s.sh_type == SHT_SYMTAB.0);
        let mut symbols = Vec::new();
        if symtab_index.is_some() {
            let st = table
                .symbols(endian, data, SHT_SYMTAB)
                .map_err(|_| ElfError::Malformed("symbol table"))?;
            symbols.reserve(st.len());
            for (i, sym) in st.iter().enumerate() {
                let sym: &Sym64<LE> = sym;
                let section = st
                    .symbol_section(endian, sym, SymbolIndex(i))
                    .map_err(|_| ElfError::Malformed("symbol section index"))?
                    .map(|s| s.0)
                    .filter(|s| *s < sections.len());
                symbols.push(SymInfo {
                    section,
                    value: sym.st_value(endian),
                });
            }
        }
        Ok(ModuleElf {
            data,
            sections,
            symbols,
            symtab: symtab_index,
        })
    }

    /// The section headers.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// A section's file bytes (empty for `SHT_NOBITS`).
    pub fn section_data(&self, index: usize) -> &'a [u8] {
        let s = &self.sections[index];
        if s.sh_type == SHT_NOBITS {
            return &[];
        }
        // Bounds were checked in `parse`.
        &self.data[s.offset as usize..(s.offset + s.size) as usize]
    }

    /// The index of the first section called `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.sections.iter().position(|s| s.name == name)
    }

    /// Linux's layout of every region (`layout_sections`): the core pass then
    /// the init pass, each over the masks text, rodata, ro-after-init, data,
    /// with each section aligned to its `sh_addralign` after its predecessor.
    pub fn layout(&self, cfg: &LayoutConfig) -> Result<Vec<RegionLayout>, ElfError> {
        use ModMemType::*;
        let masks: [(u64, u64); 5] = [
            (SHF_EXECINSTR | SHF_ALLOC, 0),
            (SHF_ALLOC, SHF_WRITE),
            (SHF_RO_AFTER_INIT | SHF_ALLOC, 0),
            (SHF_WRITE | SHF_ALLOC, 0),
            (SHF_ALLOC, 0),
        ];
        let core = [
            Some(Text),
            Some(Rodata),
            Some(RoAfterInit),
            Some(Data),
            Some(Data),
        ];
        let init = [
            Some(InitText),
            Some(InitRodata),
            None,
            Some(InitData),
            Some(InitData),
        ];
        let mut regions: Vec<RegionLayout> = ModMemType::SECTIONS
            .iter()
            .map(|k| RegionLayout {
                kind: *k,
                size: 0,
                placements: Vec::new(),
            })
            .collect();
        let mut placed = vec![false; self.sections.len()];
        for (is_init, types) in [(false, core), (true, init)] {
            for (m, (want, deny)) in masks.iter().enumerate() {
                for (i, s) in self.sections.iter().enumerate() {
                    if placed[i]
                        || s.flags & want != *want
                        || s.flags & deny != 0
                        || s.is_init(cfg) != is_init
                    {
                        continue;
                    }
                    let Some(kind) = types[m] else { continue };
                    let r = &mut regions[kind as usize];
                    let offset = align_up(r.size, s.align).ok_or(ElfError::TooLarge)?;
                    r.size = offset.checked_add(s.size).ok_or(ElfError::TooLarge)?;
                    r.placements.push(Placement {
                        section: i,
                        offset,
                        size: s.size,
                    });
                    placed[i] = true;
                }
            }
        }
        Ok(regions)
    }

    /// The layout of one region.
    pub fn region_layout(
        &self,
        kind: ModMemType,
        cfg: &LayoutConfig,
    ) -> Result<RegionLayout, ElfError> {
        if !kind.is_section() {
            return Ok(RegionLayout {
                kind,
                size: 0,
                placements: Vec::new(),
            });
        }
        Ok(self.layout(cfg)?.swap_remove(kind as usize))
    }

    fn relocs(&self, rela_index: usize) -> Result<Vec<Reloc>, ElfError> {
        let s = &self.sections[rela_index];
        if Some(s.link as usize) != self.symtab {
            return Err(ElfError::Malformed(
                "relocation section not linked to the symbol table",
            ));
        }
        let data = self.section_data(rela_index);
        if !data.len().is_multiple_of(24) {
            return Err(ElfError::Malformed("relocation section size"));
        }
        Ok(data
            .chunks_exact(24)
            .map(|e| {
                let w = |o: usize| u64::from_le_bytes(e[o..o + 8].try_into().unwrap_or([0; 8]));
                let info = w(8);
                Reloc {
                    offset: w(0),
                    r_type: info as u32,
                    sym: (info >> 32) as u32,
                    addend: w(16) as i64,
                }
            })
            .collect())
    }

    /// Relocation sections that apply to section `target`.
    fn relas_for(&self, target: usize) -> Result<Vec<usize>, ElfError> {
        let mut out = Vec::new();
        for (i, s) in self.sections.iter().enumerate() {
            if s.info as usize != target || i == target {
                continue;
            }
            match s.sh_type {
                SHT_RELA => out.push(i),
                SHT_REL => {
                    return Err(ElfError::RelWithoutAddend {
                        section: s.name.clone(),
                    })
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// The byte ranges of region `kind` (region offsets, merged, ascending)
    /// that may differ from the ELF: relocation and patch-site windows.
    pub fn patchable_ranges(
        &self,
        kind: ModMemType,
        cfg: &CheckConfig,
    ) -> Result<Vec<core::ops::Range<u64>>, ElfError> {
        let layout = self.region_layout(kind, &cfg.layout)?;
        // The size comes from untrusted section headers: bound the allocation.
        let len = usize::try_from(layout.size)
            .ok()
            .filter(|l| *l <= MAX_REGION)
            .ok_or(ElfError::TooLarge)?;
        let (_, class, _) = self.classify(&layout, len, cfg)?;
        let mut out: Vec<core::ops::Range<u64>> = Vec::new();
        for (i, c) in class.iter().enumerate() {
            if *c != WINDOW {
                continue;
            }
            let i = i as u64;
            match out.last_mut() {
                Some(r) if r.end == i => r.end = i + 1,
                _ => out.push(i..i + 1),
            }
        }
        Ok(out)
    }

    /// Per byte of a `len`-byte region: what the ELF says, and whether it is
    /// compared ([`CMP`]), inside a relocation/site window ([`WINDOW`]) or
    /// padding ([`PAD`]); plus a map from region offset to placement index.
    #[allow(clippy::type_complexity)]
    fn classify(
        &self,
        layout: &RegionLayout,
        len: usize,
        cfg: &CheckConfig,
    ) -> Result<(Vec<u8>, Vec<u8>, BTreeMap<u64, usize>), ElfError> {
        let mut expected = vec![0u8; len];
        let mut class = vec![PAD; len];
        let mut owner = BTreeMap::new();
        for (pi, p) in layout.placements.iter().enumerate() {
            let (a, b) = (p.offset as usize, (p.offset + p.size) as usize);
            let src = self.section_data(p.section);
            if !src.is_empty() {
                expected[a..b].copy_from_slice(src);
            }
            class[a..b].fill(CMP);
            owner.insert(p.offset, pi);
        }
        let in_region: BTreeMap<usize, &Placement> =
            layout.placements.iter().map(|p| (p.section, p)).collect();

        // Direct relocations.
        for p in &layout.placements {
            for rela in self.relas_for(p.section)? {
                for r in self.relocs(rela)? {
                    let width = match r.r_type {
                        R_X86_64_NONE => 0,
                        R_X86_64_64 | R_X86_64_PC64 => 8,
                        R_X86_64_PC32 | R_X86_64_PLT32 | R_X86_64_32 | R_X86_64_32S => 4,
                        other => {
                            return Err(ElfError::UnknownRelocation {
                                section: self.sections[p.section].name.clone(),
                                offset: r.offset,
                                r_type: other,
                            })
                        }
                    };
                    self.mark(&mut class, p, r.offset, width)?;
                }
            }
        }

        // Indirect patch sites.
        for table in cfg.sites {
            let Some(ti) = self.find(table.section) else {
                continue;
            };
            let tdata = self.section_data(ti);
            let mut relocs = Vec::new();
            for rela in self.relas_for(ti)? {
                relocs.extend(self.relocs(rela)?);
            }
            relocs.sort_by_key(|r| r.offset);
            let entry = table_entry_layout(table, tdata.len() as u64, &relocs)?;
            for r in &relocs {
                let width_from_entry = match entry {
                    Some(e) => {
                        if r.offset % e.size != 0 {
                            continue; // not the entry's site pointer
                        }
                        let at = (r.offset + e.len_at) as usize;
                        Some(u64::from(*tdata.get(at).ok_or(ElfError::TableLayout {
                            table: table.section,
                        })?))
                    }
                    None => None,
                };
                let sym = self
                    .symbols
                    .get(r.sym as usize)
                    .ok_or_else(|| ElfError::BadSymbol {
                        section: self.sections[ti].name.clone(),
                        index: r.sym,
                    })?;
                let Some(p) = sym.section.and_then(|s| in_region.get(&s)) else {
                    continue; // points into another region
                };
                let site = (sym.value as i64)
                    .checked_add(r.addend)
                    .filter(|s| *s >= 0 && (*s as u64) < p.size)
                    .ok_or_else(|| ElfError::OutOfSection {
                        section: self.sections[p.section].name.clone(),
                        offset: sym.value.wrapping_add(r.addend as u64),
                    })? as u64;
                let width = match width_from_entry {
                    Some(w) => w,
                    None => {
                        // Empty for SHT_NOBITS: no instruction there, so an error.
                        let code = self
                            .section_data(p.section)
                            .get(site as usize..)
                            .unwrap_or(&[]);
                        site_width(table.rule, code).ok_or_else(|| {
                            ElfError::UnexpectedSiteBytes {
                                table: table.section,
                                section: self.sections[p.section].name.clone(),
                                offset: site,
                            }
                        })?
                    }
                };
                self.mark(&mut class, p, site, width)?;
            }
        }
        Ok((expected, class, owner))
    }

    /// Checks the loaded bytes of region `kind` against the signed ELF.
    ///
    /// `loaded` is the region as the guest laid it out: at least the layout's
    /// size and at most that size rounded up to a page.
    pub fn check_region(
        &self,
        kind: ModMemType,
        loaded: &[u8],
        cfg: &CheckConfig,
    ) -> Result<CheckReport, ElfError> {
        let layout = self.region_layout(kind, &cfg.layout)?;
        let len = loaded.len() as u64;
        let max = align_up(layout.size, PAGE_SIZE).ok_or(ElfError::TooLarge)?;
        if len < layout.size || len > max {
            return Err(ElfError::RegionSize {
                kind,
                expected: layout.size,
                loaded: len,
            });
        }
        let (expected, class, owner) = self.classify(&layout, loaded.len(), cfg)?;

        // Compare.
        let mut report = CheckReport::default();
        let mut first: Option<(u64, u8, u8)> = None;
        let mut mismatches = 0u64;
        let mut i = 0usize;
        while i < loaded.len() {
            match class[i] {
                CMP => {
                    if loaded[i] == expected[i] {
                        report.compared += 1;
                    } else {
                        mismatches += 1;
                        first.get_or_insert((i as u64, expected[i], loaded[i]));
                    }
                    i += 1;
                }
                WINDOW => {
                    report.relocated += 1;
                    report.relocated_changed += u64::from(loaded[i] != expected[i]);
                    i += 1;
                }
                _ => {
                    let start = i;
                    while i < loaded.len() && class[i] == PAD {
                        i += 1;
                    }
                    let fill = loaded[start];
                    let bad = if cfg.fillers.contains(&fill) {
                        loaded[start..i]
                            .iter()
                            .position(|b| *b != fill)
                            .map(|o| start + o)
                    } else {
                        Some(start)
                    };
                    if let Some(at) = bad {
                        return Err(ElfError::BadPadding {
                            kind,
                            offset: at as u64,
                            found: loaded[at],
                        });
                    }
                    report.padding += (i - start) as u64;
                }
            }
        }
        if let Some((at, expected, found)) = first {
            let (_, pi) = owner
                .range(..=at)
                .next_back()
                .ok_or(ElfError::Malformed("mismatch outside every section"))?;
            let p = &layout.placements[*pi];
            return Err(ElfError::Mismatch {
                kind,
                section: self.sections[p.section].name.clone(),
                offset: at - p.offset,
                expected,
                found,
                count: mismatches,
            });
        }
        Ok(report)
    }

    fn mark(
        &self,
        class: &mut [u8],
        p: &Placement,
        offset: u64,
        width: u64,
    ) -> Result<(), ElfError> {
        let end = offset
            .checked_add(width)
            .filter(|e| *e <= p.size)
            .ok_or_else(|| ElfError::OutOfSection {
                section: self.sections[p.section].name.clone(),
                offset,
            })?;
        class[(p.offset + offset) as usize..(p.offset + end) as usize].fill(WINDOW);
        Ok(())
    }
}

/// Entry geometry of a structured fixup table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    /// Entry size; the site pointer is at offset 0.
    size: u64,
    /// Offset of the length byte.
    len_at: u64,
}

/// Infers the entry layout of an `.altinstructions` or `.parainstructions`
/// table from its size and relocation offsets. `None` for per-pointer tables.
fn table_entry_layout(
    table: &SiteTable,
    size: u64,
    relocs: &[Reloc],
) -> Result<Option<Entry>, ElfError> {
    let candidates: &[(u64, u64, &[u64])] = match table.rule {
        // alt_instr: s32 instr, s32 repl, u32 ft_flags | u16 cpuid, u8 instrlen, u8 replacementlen
        SiteRule::AltInstr => &[(14, 12, &[0, 4]), (12, 10, &[0, 4])],
        // paravirt_patch_site: u8 *instr, u8 type, u8 len (16) | s32 instr, u8 type, u8 len (8)
        SiteRule::ParaInstr => &[(16, 9, &[0]), (8, 5, &[0])],
        _ => return Ok(None),
    };
    for &(esize, len_at, reloc_at) in candidates {
        if size == 0 || !size.is_multiple_of(esize) {
            continue;
        }
        let entries = size / esize;
        let fits = relocs
            .iter()
            .all(|r| reloc_at.contains(&(r.offset % esize)) && r.offset < size);
        let sites = relocs.iter().filter(|r| r.offset % esize == 0).count() as u64;
        if fits && sites == entries {
            return Ok(Some(Entry {
                size: esize,
                len_at,
            }));
        }
    }
    if size == 0 {
        return Ok(Some(Entry { size: 1, len_at: 0 }));
    }
    Err(ElfError::TableLayout {
        table: table.section,
    })
}

/// The width of the site starting at `code` under `rule`, or `None` if the
/// bytes are not the instruction the rule patches.
fn site_width(rule: SiteRule, code: &[u8]) -> Option<u64> {
    let b = |i: usize| code.get(i).copied();
    match rule {
        SiteRule::Branch => match (b(0)?, b(1)) {
            (0xe8 | 0xe9, _) => Some(5),
            (0x2e, Some(0xe8 | 0xe9)) => Some(6),
            (0x0f, Some(op)) if op & 0xf0 == 0x80 => Some(6),
            _ => None,
        },
        SiteRule::Fentry => (b(0)? == 0xe8 || code.get(..5) == Some(NOP5.as_slice())).then_some(5),
        SiteRule::Endbr => (code.get(..4) == Some(ENDBR64.as_slice())).then_some(4),
        SiteRule::Lock => (b(0)? == 0xf0).then_some(1),
        SiteRule::NopRun => {
            let n = code.iter().take(16).take_while(|x| **x == 0x90).count();
            (n > 0).then_some(n as u64)
        }
        SiteRule::AltInstr | SiteRule::ParaInstr => None,
    }
}

/// Human-readable name of a region, for logs.
pub fn region_name(kind: ModMemType) -> String {
    match kind {
        ModMemType::Text => "MOD_TEXT".to_string(),
        ModMemType::Data => "MOD_DATA".to_string(),
        ModMemType::Rodata => "MOD_RODATA".to_string(),
        ModMemType::RoAfterInit => "MOD_RO_AFTER_INIT".to_string(),
        ModMemType::InitText => "MOD_INIT_TEXT".to_string(),
        ModMemType::InitData => "MOD_INIT_DATA".to_string(),
        ModMemType::InitRodata => "MOD_INIT_RODATA".to_string(),
        ModMemType::Elf => "MOD_ELF".to_string(),
        ModMemType::Patch => "heki patch info".to_string(),
    }
}

#[cfg(test)]
mod tests;
