//! Module ELF checks (`ModuleElf::parse`, `layout`, `patchable_ranges`,
//! `check_region`): the fuzz input is the signed ELF; the loaded region of
//! each type is the input's own sections laid out as Linux does, with a few
//! bytes changed (positions and values derived from a hash of the input).
//!
//! Oracles: the unchanged region passes exactly when the ELF's relocation and
//! patch-site tables are acceptable; a changed byte outside every window is
//! always reported, and one inside a window never is.
#![no_main]

use heki_tdx::abi::ToErrno;
use heki_tdx::abi::{ModMemType, PAGE_SIZE};
use heki_tdx::elf::{region_name, CheckConfig, ElfError, ModuleElf};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

/// Regions above this are only size-checked (keeps executions fast).
const MAX_FUZZ_REGION: u64 = 1 << 20;

fn rng(data: &[u8]) -> impl FnMut() -> u64 {
    // FNV-1a of the input, then xorshift64.
    let mut s = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    }) | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

fuzz_target!(|data: &[u8]| {
    let elf = match ModuleElf::parse(data) {
        Ok(e) => e,
        Err(e) => {
            let _ = (e.errno(), e.to_string());
            return;
        }
    };
    let cfg = CheckConfig::default();
    let mut next = rng(data);
    let _ = elf.layout(&cfg.layout);
    for kind in ModMemType::SECTIONS {
        let _ = region_name(kind);
        let Ok(layout) = elf.region_layout(kind, &cfg.layout) else {
            continue;
        };
        // The raw input as the loaded region: mostly a size error.
        let raw = &data[..data.len().min(layout.size as usize + PAGE_SIZE as usize)];
        if let Err(e) = elf.check_region(kind, raw, &cfg) {
            let _ = e.to_string();
        }
        if layout.size > MAX_FUZZ_REGION {
            continue;
        }
        let padded = layout.size.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let mut pristine = vec![0u8; padded as usize];
        for p in &layout.placements {
            let d = elf.section_data(p.section);
            pristine[p.offset as usize..p.offset as usize + d.len()].copy_from_slice(d);
        }
        let windows = elf.patchable_ranges(kind, &cfg);
        let clean = elf.check_region(kind, &pristine, &cfg);
        match (&windows, &clean) {
            (Ok(_), Ok(_)) => {}
            (Err(a), Err(b)) => assert_eq!(a, b),
            _ => panic!("{kind:?}: patchable_ranges {windows:?} but pristine check {clean:?}"),
        }
        // A too-short and a too-long region are size errors.
        if layout.size > 0 {
            assert!(matches!(
                elf.check_region(kind, &pristine[..layout.size as usize - 1], &cfg),
                Err(ElfError::RegionSize { .. })
            ));
        }
        let mut long = pristine.clone();
        long.resize(padded as usize + PAGE_SIZE as usize, 0);
        assert!(matches!(
            elf.check_region(kind, &long, &cfg),
            Err(ElfError::RegionSize { .. })
        ));
        if padded == 0 {
            continue;
        }

        // A few changed bytes.
        let mut edits: BTreeMap<u64, u8> = BTreeMap::new();
        for _ in 0..1 + next() % 4 {
            let at = next() % padded;
            *edits.entry(at).or_default() ^= (next() % 255 + 1) as u8;
        }
        edits.retain(|_, x| *x != 0);
        let mut loaded = pristine.clone();
        for (at, x) in &edits {
            loaded[*at as usize] ^= x;
        }
        let r = elf.check_region(kind, &loaded, &cfg);
        let (Ok(windows), Ok(_)) = (windows, clean) else {
            assert_eq!(r.err(), elf.check_region(kind, &pristine, &cfg).err());
            continue;
        };
        let in_section = |o: u64| {
            layout
                .placements
                .iter()
                .any(|p| (p.offset..p.offset + p.size).contains(&o))
        };
        let in_window = |o: u64| windows.iter().any(|w| w.contains(&o));
        let compared = edits
            .keys()
            .filter(|o| in_section(**o) && !in_window(**o))
            .count() as u64;
        let padding = edits.keys().filter(|o| !in_section(**o)).count();
        match r {
            Ok(report) => assert_eq!(
                compared, 0,
                "{kind:?}: {compared} changed compared bytes accepted ({edits:?}, {report:?})"
            ),
            Err(ElfError::Mismatch { count, .. }) => assert_eq!(count, compared),
            Err(ElfError::BadPadding { .. }) => assert!(padding > 0),
            Err(e) => panic!("{kind:?}: unexpected {e:?} after a clean pass ({edits:?})"),
        }
    }
});
