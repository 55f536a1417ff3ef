//! The fixture is `tests/data/elf/mini.S` (see its comments for what each
//! instruction exercises). Expected layouts below are worked out by hand
//! from Linux's `layout_sections` rules and `readelf -S`, not by the code
//! under test.

use super::*;
use proptest::prelude::*;

const MINI: &[u8] = include_bytes!("../../tests/data/elf/mini.o");

fn elf() -> ModuleElf<'static> {
    ModuleElf::parse(MINI).unwrap()
}

fn placements(e: &ModuleElf<'_>, kind: ModMemType) -> Vec<(String, u64, u64)> {
    e.region_layout(kind, &LayoutConfig::default())
        .unwrap()
        .placements
        .iter()
        .map(|p| (e.sections()[p.section].name.clone(), p.offset, p.size))
        .collect()
}

fn s(n: &str, o: u64, z: u64) -> (String, u64, u64) {
    (n.to_string(), o, z)
}

#[test]
fn layout_follows_linux() {
    let e = elf();
    assert_eq!(
        placements(&e, ModMemType::Text),
        [
            s(".text", 0, 0x31),
            s(".altinstr_replacement", 0x31, 5),
            s(".text.unlikely", 0x38, 0xb)
        ]
    );
    assert_eq!(
        placements(&e, ModMemType::InitText),
        [s(".init.text", 0, 0xd)]
    );
    assert_eq!(
        placements(&e, ModMemType::InitRodata),
        [s(".init.rodata", 0, 0x10)]
    );
    assert_eq!(
        placements(&e, ModMemType::Rodata),
        [
            s(".altinstructions", 0, 0xe),
            s(".rodata", 0x10, 5),
            s("__mcount_loc", 0x15, 8),
            s(".smp_locks", 0x1d, 4),
            s(".retpoline_sites", 0x21, 4),
            s(".return_sites", 0x25, 4),
            s(".ibt_endbr_seal", 0x29, 4),
        ],
        ".modinfo is not laid out"
    );
    assert_eq!(
        placements(&e, ModMemType::Data),
        [s(".data", 0, 4), s(".bss", 4, 0)]
    );
    assert!(placements(&e, ModMemType::InitData).is_empty());
    assert_eq!(
        e.region_layout(ModMemType::Text, &LayoutConfig::default())
            .unwrap()
            .size,
        0x43
    );
}

/// The bytes the guest loader would produce for `kind`, padded to a page.
fn pristine(e: &ModuleElf<'_>, kind: ModMemType) -> Vec<u8> {
    let l = e.region_layout(kind, &LayoutConfig::default()).unwrap();
    let mut out = vec![0u8; align_up(l.size, PAGE_SIZE).unwrap() as usize];
    for p in &l.placements {
        let d = e.section_data(p.section);
        out[p.offset as usize..p.offset as usize + d.len()].copy_from_slice(d);
    }
    out
}

/// MOD_TEXT after relocation and every x86 fixup the fixture has.
fn loaded_text() -> Vec<u8> {
    let mut t = pristine(&elf(), ModMemType::Text);
    let mut put = |at: usize, b: &[u8]| t[at..at + b.len()].copy_from_slice(b);
    put(0x0, &[0x0f, 0x1f, 0x40, 0x00]); // endbr64 sealed
    put(0x4, &NOP5); // ftrace NOP
    put(0x9, &[0x3e]); // lock -> ds (UP)
    put(0xc, &[1, 2, 3, 4]); // counter(%rip)
    put(0x11, &[5, 6, 7, 8]); // ext_func
    put(0x18, &[0x00, 0x10, 0x00, 0x80]); // ext_var (32S)
    put(0x1d, &[0x00, 0x10, 0x00, 0x80]); // ext_var (32)
    put(0x21, &[0xff, 0xd0, 0x66, 0x66, 0x90]); // retpoline -> call *%rax
    put(0x26, &[0xe8, 9, 9, 9, 9]); // alternative applied
    put(0x2c, &[0xc3, 0xcc, 0xcc, 0xcc, 0xcc]); // return thunk -> ret
    put(0x32, &[0xaa, 0xbb, 0xcc, 0xdd]); // .altinstr_replacement reloc
    put(0x3a, &[1, 2, 3, 4, 5, 6, 7, 8]); // .text.unlikely R_X86_64_64
    t
}

#[test]
fn pristine_and_fixed_up_regions_pass() {
    let e = elf();
    let cfg = CheckConfig::default();
    let r = e
        .check_region(ModMemType::Text, &pristine(&e, ModMemType::Text), &cfg)
        .unwrap();
    assert_eq!(r.relocated_changed, 0);
    assert_eq!(r.compared + r.relocated + r.padding, 0x1000);
    let r = e
        .check_region(ModMemType::Text, &loaded_text(), &cfg)
        .unwrap();
    // 4 + 5 + 1 + 4*4 (direct) + 5 + 5 + 5 + 4 + 8 window bytes.
    assert_eq!(r.relocated, 4 + 5 + 1 + 16 + 5 + 5 + 5 + 4 + 8);
    assert!(r.relocated_changed > 30);
    assert_eq!(r.padding, 2 + (0x1000 - 0x43));

    let mut it = pristine(&e, ModMemType::InitText);
    it[1..5].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    it[8..12].copy_from_slice(&[0x10, 0x20, 0x30, 0x40]);
    e.check_region(ModMemType::InitText, &it, &cfg).unwrap();
    let mut ir = pristine(&e, ModMemType::InitRodata);
    ir[0..8].copy_from_slice(&0xffff_ffff_c000_1000u64.to_le_bytes());
    e.check_region(ModMemType::InitRodata, &ir, &cfg).unwrap();
    // The region may be given without page rounding too.
    e.check_region(ModMemType::InitRodata, &ir[..0x10], &cfg)
        .unwrap();
}

fn mismatch(kind: ModMemType, loaded: &[u8]) -> ElfError {
    elf()
        .check_region(kind, loaded, &CheckConfig::default())
        .unwrap_err()
}

#[test]
fn changed_code_is_refused() {
    let cases: [(usize, &str, u64); 6] = [
        (0x15, ".text", 0x15),              // movq opcode
        (0x17, ".text", 0x17),              // byte before a reloc window
        (0x2b, ".text", 0x2b),              // the nop between sites
        (0x31, ".altinstr_replacement", 0), // replacement opcode
        (0x38, ".text.unlikely", 0),        // movabs REX
        (0x42, ".text.unlikely", 0xa),      // ret
    ];
    for (at, section, offset) in cases {
        let mut t = loaded_text();
        t[at] ^= 0x01;
        match mismatch(ModMemType::Text, &t) {
            ElfError::Mismatch {
                section: s,
                offset: o,
                count,
                ..
            } => {
                assert_eq!((s.as_str(), o, count), (section, offset, 1), "byte {at:#x}");
            }
            other => panic!("byte {at:#x}: {other}"),
        }
    }
    let mut t = loaded_text();
    t[0x15..0x1c].fill(0x90);
    assert!(matches!(
        mismatch(ModMemType::Text, &t),
        ElfError::Mismatch { count: 3, .. }
    ));
    let mut ir = pristine(&elf(), ModMemType::InitRodata);
    ir[8] = 0;
    assert!(matches!(
        mismatch(ModMemType::InitRodata, &ir),
        ElfError::Mismatch { offset: 8, .. }
    ));
}

#[test]
fn padding_must_be_uniform_filler() {
    let mut t = loaded_text();
    t[0x36] = 0xcc;
    t[0x37] = 0xcc;
    t[0x43..].fill(0xcc);
    elf()
        .check_region(ModMemType::Text, &t, &CheckConfig::default())
        .unwrap();
    t[0x37] = 0x00;
    assert!(matches!(
        mismatch(ModMemType::Text, &t),
        ElfError::BadPadding { offset: 0x37, .. }
    ));
    let mut t = loaded_text();
    t[0x800] = 0xc3;
    assert!(matches!(
        mismatch(ModMemType::Text, &t),
        ElfError::BadPadding {
            offset: 0x800,
            found: 0xc3,
            ..
        }
    ));
    let mut t = loaded_text();
    t[0x36] = 0x90;
    assert!(matches!(
        mismatch(ModMemType::Text, &t),
        ElfError::BadPadding { offset: 0x36, .. }
    ));
}

#[test]
fn region_size_is_checked() {
    let t = loaded_text();
    for len in [0, 0x42, 0x1001, 0x2000] {
        let mut v = t.clone();
        v.resize(len, 0);
        assert!(
            matches!(mismatch(ModMemType::Text, &v), ElfError::RegionSize { .. }),
            "{len:#x}"
        );
    }
    // An absent region is fine when empty.
    elf()
        .check_region(ModMemType::InitData, &[], &CheckConfig::default())
        .unwrap();
    assert!(matches!(
        mismatch(ModMemType::InitData, &[0; 4096]),
        ElfError::RegionSize { .. }
    ));
}

fn patched(f: impl FnOnce(&ModuleElf<'_>, &mut Vec<u8>)) -> Vec<u8> {
    let mut copy = MINI.to_vec();
    f(&elf(), &mut copy);
    copy
}

fn rela_entry(e: &ModuleElf<'_>, section: &str, n: usize) -> usize {
    e.sections()[e.find(section).unwrap()].offset as usize + 24 * n
}

#[test]
fn unknown_relocations_are_errors_not_panics() {
    let bad = patched(|e, b| {
        let at = rela_entry(e, ".rela.text", 0) + 8;
        b[at..at + 4].copy_from_slice(&9u32.to_le_bytes()); // R_X86_64_GOTPCREL
    });
    let e = ModuleElf::parse(&bad).unwrap();
    assert_eq!(
        e.check_region(ModMemType::Text, &loaded_text(), &CheckConfig::default()),
        Err(ElfError::UnknownRelocation {
            section: ".text".into(),
            offset: 5,
            r_type: 9
        })
    );
    // Relocation beyond the section end.
    let bad = patched(|e, b| {
        let at = rela_entry(e, ".rela.text", 0);
        b[at..at + 8].copy_from_slice(&0x2fu64.to_le_bytes());
    });
    let e = ModuleElf::parse(&bad).unwrap();
    assert!(matches!(
        e.check_region(ModMemType::Text, &loaded_text(), &CheckConfig::default()),
        Err(ElfError::OutOfSection { .. })
    ));
    // Symbol index out of range in a site table.
    let bad = patched(|e, b| {
        let at = rela_entry(e, ".rela.smp_locks", 0) + 12;
        b[at..at + 4].copy_from_slice(&0xffffu32.to_le_bytes());
    });
    let e = ModuleElf::parse(&bad).unwrap();
    assert!(matches!(
        e.check_region(ModMemType::Text, &loaded_text(), &CheckConfig::default()),
        Err(ElfError::BadSymbol { .. })
    ));
}

#[test]
fn site_tables_must_point_at_their_instruction() {
    for (rela, table) in [
        (".rela.smp_locks", ".smp_locks"),
        (".rela__mcount_loc", "__mcount_loc"),
        (".rela.ibt_endbr_seal", ".ibt_endbr_seal"),
        (".rela.return_sites", ".return_sites"),
    ] {
        let bad = patched(|e, b| {
            let at = rela_entry(e, rela, 0) + 16;
            let addend = i64::from_le_bytes(b[at..at + 8].try_into().unwrap());
            b[at..at + 8].copy_from_slice(&(addend + 1).to_le_bytes());
        });
        let e = ModuleElf::parse(&bad).unwrap();
        match e.check_region(ModMemType::Text, &loaded_text(), &CheckConfig::default()) {
            Err(ElfError::UnexpectedSiteBytes { table: t, .. }) => assert_eq!(t, table),
            other => panic!("{table}: {other:?}"),
        }
    }
    // A site pointer beyond its section.
    let bad = patched(|e, b| {
        let at = rela_entry(e, ".rela.smp_locks", 0) + 16;
        b[at..at + 8].copy_from_slice(&0x1000i64.to_le_bytes());
    });
    let e = ModuleElf::parse(&bad).unwrap();
    assert!(matches!(
        e.check_region(ModMemType::Text, &loaded_text(), &CheckConfig::default()),
        Err(ElfError::OutOfSection { .. })
    ));
    // Without the fixup tables the fixed-up text is refused.
    let strict = CheckConfig {
        sites: &[],
        ..CheckConfig::default()
    };
    assert!(matches!(
        elf().check_region(ModMemType::Text, &loaded_text(), &strict),
        Err(ElfError::Mismatch { .. })
    ));
}

#[test]
fn alt_instr_entry_layouts() {
    let t = &LINUX_X86_64_SITES[0];
    let r = |offset| Reloc {
        offset,
        r_type: R_X86_64_PC32,
        sym: 1,
        addend: 0,
    };
    let e14 = table_entry_layout(t, 28, &[r(0), r(4), r(14), r(18)]).unwrap();
    assert_eq!(
        e14,
        Some(Entry {
            size: 14,
            len_at: 12
        })
    );
    let e12 = table_entry_layout(t, 24, &[r(0), r(4), r(12), r(16)]).unwrap();
    assert_eq!(
        e12,
        Some(Entry {
            size: 12,
            len_at: 10
        })
    );
    // 84 bytes are 6 x 14 or 7 x 12: the relocation offsets decide.
    let six: Vec<_> = (0..6).flat_map(|i| [r(i * 14), r(i * 14 + 4)]).collect();
    assert_eq!(table_entry_layout(t, 84, &six).unwrap().unwrap().size, 14);
    let seven: Vec<_> = (0..7).flat_map(|i| [r(i * 12), r(i * 12 + 4)]).collect();
    assert_eq!(table_entry_layout(t, 84, &seven).unwrap().unwrap().size, 12);
    assert!(table_entry_layout(t, 30, &[r(0)]).is_err());
    assert!(table_entry_layout(t, 28, &[r(0), r(6)]).is_err());
    let p = &LINUX_X86_64_SITES[1];
    assert_eq!(
        table_entry_layout(p, 32, &[r(0), r(16)]).unwrap(),
        Some(Entry {
            size: 16,
            len_at: 9
        })
    );
    assert_eq!(
        table_entry_layout(p, 16, &[r(0), r(8)]).unwrap(),
        Some(Entry { size: 8, len_at: 5 })
    );
}

#[test]
fn site_widths() {
    use SiteRule::*;
    assert_eq!(site_width(Branch, &[0xe8, 0, 0, 0, 0]), Some(5));
    assert_eq!(site_width(Branch, &[0xe9]), Some(5));
    assert_eq!(site_width(Branch, &[0x2e, 0xe8]), Some(6));
    assert_eq!(site_width(Branch, &[0x0f, 0x85]), Some(6));
    assert_eq!(site_width(Branch, &[0x0f, 0x1f]), None);
    assert_eq!(site_width(Branch, &[]), None);
    assert_eq!(site_width(Fentry, &NOP5), Some(5));
    assert_eq!(site_width(Fentry, &NOP5[..4]), None);
    assert_eq!(site_width(Endbr, &ENDBR64), Some(4));
    assert_eq!(site_width(Lock, &[0xf0]), Some(1));
    assert_eq!(site_width(Lock, &[0x3e]), None);
    assert_eq!(site_width(NopRun, &[0x90; 20]), Some(16));
    assert_eq!(site_width(NopRun, &[0x90, 0x90, 0xcc]), Some(2));
    assert_eq!(site_width(NopRun, &[0xcc]), None);
}

#[test]
fn not_a_module() {
    assert!(matches!(ModuleElf::parse(&[]), Err(ElfError::Malformed(_))));
    assert!(matches!(
        ModuleElf::parse(&MINI[..40]),
        Err(ElfError::Malformed(_))
    ));
    let mut exec = MINI.to_vec();
    exec[16] = 2; // ET_EXEC
    assert_eq!(
        ModuleElf::parse(&exec).unwrap_err(),
        ElfError::NotX86_64Relocatable
    );
    let mut arm = MINI.to_vec();
    arm[18] = 183; // EM_AARCH64
    assert_eq!(
        ModuleElf::parse(&arm).unwrap_err(),
        ElfError::NotX86_64Relocatable
    );
    let mut class32 = MINI.to_vec();
    class32[4] = 1;
    assert!(ModuleElf::parse(&class32).is_err());
    // Section headers cut off.
    assert!(ModuleElf::parse(&MINI[..MINI.len() - 10]).is_err());
    // A section pointing past the end of the file.
    let bad = patched(|e, b| {
        let shoff = u64::from_le_bytes(b[0x28..0x30].try_into().unwrap()) as usize;
        let idx = e.find(".text").unwrap();
        let at = shoff + 64 * idx + 32; // sh_size
        b[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    });
    assert!(matches!(
        ModuleElf::parse(&bad),
        Err(ElfError::Malformed(_))
    ));
    // Non-power-of-two alignment.
    let bad = patched(|e, b| {
        let shoff = u64::from_le_bytes(b[0x28..0x30].try_into().unwrap()) as usize;
        let idx = e.find(".rodata").unwrap();
        let at = shoff + 64 * idx + 48; // sh_addralign
        b[at..at + 8].copy_from_slice(&24u64.to_le_bytes());
    });
    assert!(matches!(
        ModuleElf::parse(&bad),
        Err(ElfError::BadAlignment { .. })
    ));
    // A huge alignment is an error, not a wrapped layout.
    let bad = patched(|e, b| {
        let shoff = u64::from_le_bytes(b[0x28..0x30].try_into().unwrap()) as usize;
        let idx = e.find(".text.unlikely").unwrap();
        let at = shoff + 64 * idx + 48;
        b[at..at + 8].copy_from_slice(&(1u64 << 63).to_le_bytes());
    });
    let e = ModuleElf::parse(&bad).unwrap();
    assert!(matches!(
        e.check_region(ModMemType::Text, &loaded_text(), &CheckConfig::default()),
        Err(ElfError::RegionSize { expected, .. }) if expected > 1 << 63
    ));
    assert_eq!(align_up(u64::MAX - 2, 8), None);
}

#[test]
fn sites_in_nobits_sections_are_errors() {
    // Turn .text into SHT_NOBITS: the .smp_locks site then points at no bytes.
    let bad = patched(|e, b| {
        let shoff = u64::from_le_bytes(b[0x28..0x30].try_into().unwrap()) as usize;
        let at = shoff + 64 * e.find(".text").unwrap() + 4; // sh_type
        b[at..at + 4].copy_from_slice(&8u32.to_le_bytes());
    });
    let e = ModuleElf::parse(&bad).unwrap();
    let err = e
        .check_region(ModMemType::Text, &loaded_text(), &CheckConfig::default())
        .unwrap_err();
    assert!(
        matches!(
            err,
            ElfError::UnexpectedSiteBytes { .. } | ElfError::OutOfSection { .. }
        ),
        "{err}"
    );
    assert!(e
        .patchable_ranges(ModMemType::Text, &CheckConfig::default())
        .is_err());
}

#[test]
fn huge_regions_are_not_allocated() {
    // A NOBITS executable section claiming 1 TiB.
    let bad = patched(|e, b| {
        let shoff = u64::from_le_bytes(b[0x28..0x30].try_into().unwrap()) as usize;
        let at = shoff + 64 * e.find(".text.unlikely").unwrap();
        b[at + 4..at + 8].copy_from_slice(&8u32.to_le_bytes());
        b[at + 32..at + 40].copy_from_slice(&(1u64 << 40).to_le_bytes());
    });
    let e = ModuleElf::parse(&bad).unwrap();
    assert_eq!(
        e.patchable_ranges(ModMemType::Text, &CheckConfig::default()),
        Err(ElfError::TooLarge)
    );
    assert!(matches!(
        e.check_region(ModMemType::Text, &loaded_text(), &CheckConfig::default()),
        Err(ElfError::RegionSize { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Corrupted ELF files never panic the parser or the checker.
    #[test]
    fn corrupted_elf_never_panics(
        edits in proptest::collection::vec((0..MINI.len(), any::<u8>()), 1..8),
        kind in 0u64..7,
    ) {
        let mut b = MINI.to_vec();
        for (at, v) in edits {
            b[at] = v;
        }
        if let Ok(e) = ModuleElf::parse(&b) {
            let kind = <ModMemType as crate::abi::RangeAttr>::decode(kind).unwrap();
            let loaded = vec![0u8; 0x1000];
            let _ = e.check_region(kind, &loaded, &CheckConfig::default());
            let _ = e.check_region(ModMemType::Text, &loaded_text(), &CheckConfig::default());
        }
    }

    /// Hostile section headers and relocation entries (types, sizes, offsets,
    /// links, symbol indices, addends) never panic either.
    #[test]
    fn hostile_headers_never_panic(
        edits in proptest::collection::vec(
            (0usize..31, 0usize..8, any::<u64>(), 0usize..4), 1..4),
    ) {
        let e = elf();
        let shoff = u64::from_le_bytes(MINI[0x28..0x30].try_into().unwrap()) as usize;
        let relas: Vec<usize> = (0..e.sections().len())
            .filter(|i| e.sections()[*i].sh_type == SHT_RELA)
            .collect();
        let mut b = MINI.to_vec();
        for (sec, field, value, small) in edits {
            let value = match small { 0 => value, 1 => value % 64, 2 => value % 0x2000, _ => 8 };
            if field < 6 {
                // sh_type, sh_flags, sh_offset, sh_size, sh_link/sh_info, sh_addralign
                let (off, width) = [(4, 4), (8, 8), (24, 8), (32, 8), (40, 8), (48, 8)][field];
                let at = shoff + 64 * (sec % e.sections().len()) + off;
                b[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
            } else {
                let r = e.sections()[relas[sec % relas.len()]].offset as usize;
                let at = r + if field == 6 { 8 } else { 16 };
                b[at..at + 8].copy_from_slice(&value.to_le_bytes());
            }
        }
        if let Ok(e) = ModuleElf::parse(&b) {
            for kind in ModMemType::SECTIONS {
                let _ = e.patchable_ranges(kind, &CheckConfig::default());
                let _ = e.check_region(kind, &loaded_text(), &CheckConfig::default());
            }
        }
    }
}
