//! `heki_page` chains read from guest memory built out of the fuzz input:
//! `read_ranges` in every attribute namespace, `read_kdata`,
//! `ModuleRequest::read` (+ `copy_section`) and `patch::read_request`.
//!
//! Input: a 7-byte header, then guest memory.
//!
//! * byte 0: bits 0..3 select how many input bytes fill each guest page
//!   (`64 << n`, at most 4096; the rest of the page is zero), bit 3 selects
//!   tight [`Limits`], bit 4 makes the first-page GPA unaligned;
//! * bytes 1..3: the announced number of ranges (u16 LE);
//! * byte 3: the first `heki_page` GPA in pages;
//! * bytes 4..7: a `PATCH_TEXT` request GPA (0x1000 + u16 LE) and its second
//!   page (byte 6, in pages).
//!
//! Guest page `i + 1` (GPA `(i + 1) * 0x1000`) holds chunk `i` of the rest;
//! every other GPA faults.
#![no_main]

use heki_tdx::abi::{
    page_aligned, KdataType, KexecType, KeyPayload, MemAttr, ModMemType, RangeAttr, PAGE_SIZE,
};
use heki_tdx::pages::{
    read_kdata, read_ranges, GuestMemory, GuestMemoryError, Limits, ModuleRequest,
};
use heki_tdx::patch::read_request;
use libfuzzer_sys::fuzz_target;

const HEADER: usize = 7;

/// Guest pages 1..=n; reads count so that the one-copy rule can be checked.
struct Mem {
    pages: Vec<Vec<u8>>,
    reads: usize,
}

impl Mem {
    fn new(data: &[u8], chunk: usize) -> Self {
        let pages = data
            .chunks(chunk)
            .map(|c| {
                let mut p = vec![0u8; PAGE_SIZE as usize];
                p[..c.len()].copy_from_slice(c);
                p
            })
            .collect();
        Mem { pages, reads: 0 }
    }
}

impl GuestMemory for Mem {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
        self.reads += 1;
        let err = GuestMemoryError {
            gpa,
            len: buf.len(),
        };
        let mut done = 0usize;
        while done < buf.len() {
            let a = gpa.checked_add(done as u64).ok_or(err)?;
            let page = (a / PAGE_SIZE)
                .checked_sub(1)
                .and_then(|i| self.pages.get(usize::try_from(i).ok()?))
                .ok_or(err)?;
            let off = (a % PAGE_SIZE) as usize;
            let n = (PAGE_SIZE as usize - off).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&page[off..off + n]);
            done += n;
        }
        Ok(())
    }
}

fn canonical(va: u64) -> bool {
    let top = (va as i64) >> 56;
    top == 0 || top == -1
}

/// `read_ranges` in namespace `A`; anything accepted satisfies the documented invariants.
fn chain<A: RangeAttr>(mem: &mut Mem, first: u64, total: u64, l: &Limits) {
    mem.reads = 0;
    let r = read_ranges::<A, _>(mem, first, total, l);
    assert!(mem.reads <= l.max_pages, "more page reads than max_pages");
    if let Ok(ranges) = r {
        assert_eq!(ranges.len() as u64, total);
        for x in &ranges {
            assert!(x.pa < x.epa && x.epa <= l.max_gpa, "{x:?}");
            assert!(!x.is_empty());
            if x.attr.page_granular() {
                assert!(page_aligned(x.va) && page_aligned(x.pa) && page_aligned(x.epa));
            }
            let last = x.va + (x.epa - x.pa - 1);
            assert!(canonical(x.va) && canonical(last));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < HEADER {
        return;
    }
    let cfg = data[0];
    let chunk = (64usize << (cfg & 7)).min(PAGE_SIZE as usize);
    let limits = if cfg & 8 != 0 {
        Limits {
            max_pages: 3,
            max_ranges: 200,
            max_gpa: 0x40_0000,
            max_blob_bytes: 0x3000,
        }
    } else {
        Limits::default()
    };
    let total = u64::from(u16::from_le_bytes([data[1], data[2]]));
    let first = u64::from(data[3]) * PAGE_SIZE + if cfg & 16 != 0 { 8 } else { 0 };
    let a1 = 0x1000 + u64::from(u16::from_le_bytes([data[4], data[5]]));
    let a2 = u64::from(data[6]) * PAGE_SIZE;
    let mut mem = Mem::new(&data[HEADER..], chunk);

    chain::<MemAttr>(&mut mem, first, total, &limits);
    chain::<KdataType>(&mut mem, first, total, &limits);
    chain::<ModMemType>(&mut mem, first, total, &limits);
    chain::<KexecType>(&mut mem, first, total, &limits);
    chain::<KeyPayload>(&mut mem, first, total, &limits);

    if let Ok(kd) = read_kdata(&mut mem, first, total, &limits) {
        assert!(!kd.system_certs.is_empty());
        for blob in [
            &kd.system_certs,
            &kd.revocation_certs,
            &kd.blocklist,
            &kd.kernel_info,
            &kd.kernel_data,
            &kd.patch_info,
        ] {
            assert!(blob.len() <= limits.max_blob_bytes);
        }
        assert!(kd
            .kexec_trampoline
            .iter()
            .all(|r| r.attr == KdataType::KexecTrampoline));
    }

    if let Ok(req) = ModuleRequest::read(&mut mem, first, total, &limits) {
        assert!(!req.elf.is_empty() && req.elf.len() <= limits.max_blob_bytes);
        assert!(req.patch_info.len() <= limits.max_blob_bytes);
        assert!(req.sections.iter().all(|r| r.attr.is_section()));
        for ty in ModMemType::SECTIONS {
            if let Ok(bytes) = req.copy_section(&mut mem, ty, &limits) {
                let want: u64 = req.ranges(ty).iter().map(|r| r.len()).sum();
                assert_eq!(bytes.len() as u64, want);
            }
        }
    }

    if let Ok(p) = read_request(&mut mem, a1, a2) {
        assert!((1..=5).contains(&p.size) && p.pa[0] != 0);
        assert_eq!(p.byte_gpas().len(), usize::from(p.size));
    }
});
