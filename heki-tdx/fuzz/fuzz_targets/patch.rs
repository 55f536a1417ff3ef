//! `heki_patch` / `heki_patch_info` parsing and `PatchRegistry` operation
//! sequences (`register`, `register_all`, `remove_where`, `apply`), checked
//! against a model: a shadow copy of guest text and the set of registered
//! sites.
//!
//! Input: a sequence of operations, each an op byte and its payload:
//!
//! | `op & 7` | payload | operation |
//! |---|---|---|
//! | 0 | 24-byte `heki_patch` | `apply` (a `PATCH_TEXT` request) |
//! | 1 | 24-byte `heki_patch` | `register` for the kernel |
//! | 2 | 24-byte `heki_patch` | `register` for module `(op >> 3) & 3`, init if `op & 0x20` |
//! | 3 | 24-byte `heki_patch` | guest write of its bytes outside every site |
//! | 4 | none | `remove_where` module `(op >> 3) & 3` (init sites only if `op & 0x20`) |
//! | 5 | `heki_patch_info` of `((op >> 3) & 7) + 1` patches | `parse_patch_info` + `register_all` for module 3 |
//! | 6, 7 | 1 byte (site) | a well-formed `text_poke_bp` step at a registered site: `(op >> 3) % 5` selects INT3, JMP tail, NOP tail, JMP first byte, NOP first byte |
//!
//! Owners may register sites only in pages whose index is not 3 mod 4.
#![no_main]

use heki_tdx::abi::ToErrno;
use heki_tdx::patch::{
    parse_patch_info, HekiPatch, Owner, PatchRegistry, SiteState, HEKI_PATCH_SIZE, INT3, NOP2,
    NOP5, PATCH_INFO_HEADER_SIZE,
};
use libfuzzer_sys::fuzz_target;
use std::collections::{BTreeMap, BTreeSet};

fn allowed(g: u64) -> bool {
    (g >> 12) & 3 != 3
}

#[derive(Default)]
struct Model {
    /// Guest text as the patches left it (unwritten bytes are 0).
    shadow: BTreeMap<u64, u8>,
    /// Registered sites: first-byte GPA -> (byte GPAs, owner).
    sites: BTreeMap<u64, (Vec<u64>, Owner)>,
}

impl Model {
    fn site_bytes(&self) -> BTreeSet<u64> {
        self.sites
            .values()
            .flat_map(|(g, _)| g.iter().copied())
            .collect()
    }

    fn read(&self, gpas: &[u64]) -> Vec<u8> {
        gpas.iter()
            .map(|g| self.shadow.get(g).copied().unwrap_or(0))
            .collect()
    }
}

fn record(b: &[u8]) -> [u8; HEKI_PATCH_SIZE] {
    let mut r = [0u8; HEKI_PATCH_SIZE];
    r.copy_from_slice(&b[..HEKI_PATCH_SIZE]);
    r
}

fn parse(b: &[u8]) -> Option<HekiPatch> {
    let p = HekiPatch::parse(&record(b)).ok()?;
    assert_eq!(HekiPatch::parse(&p.to_bytes()), Ok(p));
    let gpas = p.byte_gpas();
    assert_eq!(gpas.len(), usize::from(p.size));
    let written: Vec<(u64, u8)> = p
        .writes()
        .iter()
        .flat_map(|(g, b)| b.iter().enumerate().map(move |(i, x)| (g + i as u64, *x)))
        .collect();
    let expect: Vec<(u64, u8)> = gpas
        .iter()
        .copied()
        .zip(p.bytes().iter().copied())
        .collect();
    assert_eq!(written, expect);
    Some(p)
}

/// A request for bytes `from..from + code.len()` of the site with GPAs `gpas`.
fn request(gpas: &[u64], from: usize, code: &[u8]) -> Option<HekiPatch> {
    let g = &gpas[from..from + code.len()];
    let pa1 = g
        .iter()
        .find(|x| *x >> 12 != g[0] >> 12)
        .map(|x| x & !0xfff)
        .unwrap_or(0);
    let mut c = [0u8; 5];
    c[..code.len()].copy_from_slice(code);
    let p = HekiPatch {
        pa: [g[0], pa1],
        size: code.len() as u8,
        code: c,
    };
    HekiPatch::parse(&p.to_bytes()).ok()
}

fn apply(reg: &mut PatchRegistry, model: &mut Model, p: &HekiPatch) {
    match reg.apply(p) {
        Ok(()) => {
            let inside = model.site_bytes();
            for (g, b) in p.byte_gpas().into_iter().zip(p.bytes()) {
                assert!(inside.contains(&g), "write outside every site at {g:#x}");
                model.shadow.insert(g, *b);
            }
        }
        Err(e) => {
            let _ = (e.errno(), e.to_string());
        }
    }
}

fn register(reg: &mut PatchRegistry, model: &mut Model, p: &HekiPatch, owner: Owner) {
    let gpas = p.byte_gpas();
    let before = reg.len();
    let current = model.read(&gpas);
    match reg.register(p, owner, allowed, Some(&current)) {
        Ok(()) => {
            let site = reg.site(gpas[0]).expect("registered site");
            assert_eq!(site.gpas, gpas);
            assert_eq!(site.owner, owner);
            model.sites.insert(gpas[0], (gpas, owner));
        }
        Err(e) => {
            let _ = (e.errno(), e.to_string());
            assert_eq!(reg.len(), before);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_patch_info(data);
    let mut reg = PatchRegistry::new();
    let mut model = Model::default();
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let token = u64::from((op >> 3) & 3);
        let init = op & 0x20 != 0;
        match op & 7 {
            0..=3 => {
                if rest.len() < HEKI_PATCH_SIZE {
                    break;
                }
                let (rec, tail) = rest.split_at(HEKI_PATCH_SIZE);
                rest = tail;
                let Some(p) = parse(rec) else { continue };
                match op & 7 {
                    0 => apply(&mut reg, &mut model, &p),
                    1 => register(&mut reg, &mut model, &p, Owner::Kernel),
                    2 => register(&mut reg, &mut model, &p, Owner::Module { token, init }),
                    _ => {
                        let sites = model.site_bytes();
                        for (g, b) in p.byte_gpas().into_iter().zip(p.bytes()) {
                            if !sites.contains(&g) {
                                model.shadow.insert(g, *b);
                            }
                        }
                    }
                }
            }
            4 => {
                let pred = |o: Owner| match o {
                    Owner::Module { token: t, init: i } => t == token && (i || !init),
                    Owner::Kernel => false,
                };
                let n = reg.remove_where(pred);
                let before = model.sites.len();
                model.sites.retain(|_, (_, o)| !pred(*o));
                assert_eq!(n, before - model.sites.len());
            }
            5 => {
                let k = usize::from((op >> 3) & 7) + 1;
                let len = PATCH_INFO_HEADER_SIZE + k * HEKI_PATCH_SIZE;
                if rest.len() < len {
                    break;
                }
                let (blob, tail) = rest.split_at(len);
                rest = tail;
                let Ok(patches) = parse_patch_info(blob) else {
                    continue;
                };
                let owner = Owner::Module {
                    token: 3,
                    init: false,
                };
                let before = reg.len();
                match reg.register_all(&patches, owner, allowed) {
                    Ok(added) => {
                        let mut new = 0;
                        for p in &patches {
                            let gpas = p.byte_gpas();
                            let site = reg.site(gpas[0]).expect("registered site");
                            assert_eq!(site.gpas, gpas);
                            if model.sites.insert(gpas[0], (gpas, owner)).is_none() {
                                new += 1;
                            }
                        }
                        assert_eq!(added, new);
                    }
                    Err(_) => assert_eq!(reg.len(), before, "register_all is all or nothing"),
                }
            }
            _ => {
                let Some((&which, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                if model.sites.is_empty() {
                    continue;
                }
                let key = *model
                    .sites
                    .keys()
                    .nth(usize::from(which) % model.sites.len())
                    .expect("site");
                let site = reg.site(key).expect("modelled site").clone();
                let nop: &[u8] = if site.jump.len() == 2 { &NOP2 } else { &NOP5 };
                let req = match (op >> 3) % 5 {
                    0 => request(&site.gpas, 0, &[INT3]),
                    1 => request(&site.gpas, 1, &site.jump[1..]),
                    2 => request(&site.gpas, 1, &nop[1..]),
                    3 => request(&site.gpas, 0, &site.jump[..1]),
                    _ => request(&site.gpas, 0, &nop[..1]),
                };
                if let Some(p) = req {
                    apply(&mut reg, &mut model, &p);
                }
            }
        }

        // Invariants: the model and the registry agree, and every site in a
        // stable state holds exactly one of its two legal instructions.
        assert_eq!(reg.len(), model.sites.len());
        for (key, (gpas, owner)) in &model.sites {
            let site = reg.site(*key).expect("modelled site");
            assert_eq!(&site.gpas, gpas);
            assert_eq!(site.owner, *owner);
            if let SiteState::Stable(Some(v)) = site.state {
                let now = model.read(&site.gpas);
                assert_eq!(site.classify(&now), Some(v), "site {key:#x} is not whole");
            }
        }
    }
});
