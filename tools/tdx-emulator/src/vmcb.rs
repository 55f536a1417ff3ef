//! The VMCB (AMD APM vol. 2, appendix B) with named accessors, and the
//! conversions between VMX segment access rights and SVM attributes.

use crate::page::Page;
use alloc::boxed::Box;

/// Control-area and save-area offsets.
#[allow(dead_code)]
pub mod off {
    pub const CR_INTERCEPTS: usize = 0x000;
    pub const DR_INTERCEPTS: usize = 0x004;
    pub const EXC_INTERCEPTS: usize = 0x008;
    pub const MISC1: usize = 0x00C;
    pub const MISC2: usize = 0x010;
    pub const IOPM: usize = 0x040;
    pub const MSRPM: usize = 0x048;
    pub const TSC_OFFSET: usize = 0x050;
    pub const ASID: usize = 0x058;
    pub const TLB_CONTROL: usize = 0x05C;
    pub const INT_CTL: usize = 0x060;
    pub const INT_SHADOW: usize = 0x068;
    pub const EXITCODE: usize = 0x070;
    pub const EXITINFO1: usize = 0x078;
    pub const EXITINFO2: usize = 0x080;
    pub const EXITINTINFO: usize = 0x088;
    pub const NP_CTL: usize = 0x090;
    pub const EVENTINJ: usize = 0x0A8;
    pub const NCR3: usize = 0x0B0;
    pub const CLEAN: usize = 0x0C0;
    pub const NRIP: usize = 0x0C8;
    pub const ES: usize = 0x400;
    pub const CS: usize = 0x410;
    pub const SS: usize = 0x420;
    pub const DS: usize = 0x430;
    pub const FS: usize = 0x440;
    pub const GS: usize = 0x450;
    pub const GDTR: usize = 0x460;
    pub const LDTR: usize = 0x470;
    pub const IDTR: usize = 0x480;
    pub const TR: usize = 0x490;
    pub const CPL: usize = 0x4CB;
    pub const EFER: usize = 0x4D0;
    pub const CR4: usize = 0x548;
    pub const CR3: usize = 0x550;
    pub const CR0: usize = 0x558;
    pub const DR7: usize = 0x560;
    pub const DR6: usize = 0x568;
    pub const RFLAGS: usize = 0x570;
    pub const RIP: usize = 0x578;
    pub const RSP: usize = 0x5D8;
    pub const RAX: usize = 0x5F8;
    pub const STAR: usize = 0x600;
    pub const LSTAR: usize = 0x608;
    pub const CSTAR: usize = 0x610;
    pub const SFMASK: usize = 0x618;
    pub const KGSBASE: usize = 0x620;
    pub const SYSENTER_CS: usize = 0x628;
    pub const SYSENTER_ESP: usize = 0x630;
    pub const SYSENTER_EIP: usize = 0x638;
    pub const CR2: usize = 0x640;
    pub const G_PAT: usize = 0x668;
}

/// Exit codes (APM vol. 2, table C-1).
#[allow(dead_code)]
pub mod exit {
    pub const CR0_READ: u64 = 0x00;
    pub const CR3_READ: u64 = 0x03;
    pub const CR4_READ: u64 = 0x04;
    pub const CR8_READ: u64 = 0x08;
    pub const CR0_WRITE: u64 = 0x10;
    pub const CR3_WRITE: u64 = 0x13;
    pub const CR4_WRITE: u64 = 0x14;
    pub const CR8_WRITE: u64 = 0x18;
    pub const EXCP_BASE: u64 = 0x40;
    pub const UD: u64 = 0x46;
    pub const DF: u64 = 0x48;
    pub const INTR: u64 = 0x60;
    pub const IDTR_READ: u64 = 0x66;
    pub const GDTR_READ: u64 = 0x67;
    pub const LDTR_READ: u64 = 0x68;
    pub const TR_READ: u64 = 0x69;
    pub const LDTR_WRITE: u64 = 0x6C;
    pub const TR_WRITE: u64 = 0x6D;
    pub const IDTR_WRITE: u64 = 0x6A;
    pub const GDTR_WRITE: u64 = 0x6B;
    pub const CPUID: u64 = 0x72;
    pub const HLT: u64 = 0x78;
    pub const IOIO: u64 = 0x7B;
    pub const MSR: u64 = 0x7C;
    pub const SHUTDOWN: u64 = 0x7F;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const VMLOAD: u64 = 0x82;
    pub const VMSAVE: u64 = 0x83;
    pub const STGI: u64 = 0x84;
    pub const CLGI: u64 = 0x85;
    pub const SKINIT: u64 = 0x86;
    pub const WBINVD: u64 = 0x89;
    pub const MONITOR: u64 = 0x8A;
    pub const MWAIT: u64 = 0x8B;
    pub const NPF: u64 = 0x400;
    pub const INVALID: u64 = 0xFFFF_FFFF;
}

/// MISC1 intercept bits (VMCB 0x00C).
#[allow(dead_code)]
pub mod misc1 {
    pub const INTR: u32 = 1 << 0;
    pub const IDTR_READ: u32 = 1 << 6;
    pub const GDTR_READ: u32 = 1 << 7;
    pub const LDTR_READ: u32 = 1 << 8;
    pub const TR_READ: u32 = 1 << 9;
    pub const LDTR_WRITE: u32 = 1 << 12;
    pub const TR_WRITE: u32 = 1 << 13;
    pub const IDTR_WRITE: u32 = 1 << 10;
    pub const GDTR_WRITE: u32 = 1 << 11;
    pub const CPUID: u32 = 1 << 18;
    pub const HLT: u32 = 1 << 24;
    pub const IOIO: u32 = 1 << 27;
    pub const MSR: u32 = 1 << 28;
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// MISC2 intercept bits (VMCB 0x010).
#[allow(dead_code)]
pub mod misc2 {
    pub const VMRUN: u32 = 1 << 0;
    pub const VMMCALL: u32 = 1 << 1;
    pub const VMLOAD: u32 = 1 << 2;
    pub const VMSAVE: u32 = 1 << 3;
    pub const STGI: u32 = 1 << 4;
    pub const CLGI: u32 = 1 << 5;
    pub const SKINIT: u32 = 1 << 6;
    pub const WBINVD: u32 = 1 << 9;
    pub const MONITOR: u32 = 1 << 10;
    pub const MWAIT: u32 = 1 << 11;
    /// Every SVM instruction: none of them exists on an Intel TDX CPU.
    pub const SVM_INSNS: u32 = VMRUN | VMMCALL | VMLOAD | VMSAVE | STGI | CLGI | SKINIT;
}

/// EFER.SVME.
pub const EFER_SVME: u64 = 1 << 12;

/// A segment register as the VMCB stores it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seg {
    pub selector: u16,
    /// SVM attribute format: descriptor bits 40–47 in 7:0, bits 52–55 in 11:8.
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

/// VMX access rights (bits 7:0 type/S/DPL/P, 15:12 AVL/L/DB/G, 16 unusable) →
/// SVM attributes. An unusable segment becomes not-present.
pub const fn ar_to_attrib(ar: u64) -> u16 {
    if ar & (1 << 16) != 0 {
        return 0;
    }
    ((ar & 0xFF) | ((ar >> 4) & 0xF00)) as u16
}

/// SVM attributes → VMX access rights; a not-present data segment becomes unusable.
pub const fn attrib_to_ar(attrib: u16) -> u64 {
    let a = attrib as u64;
    if a & 0x80 == 0 {
        return (1 << 16) | (a & 0xFF) | ((a & 0xF00) << 4);
    }
    (a & 0xFF) | ((a & 0xF00) << 4)
}

/// A VMCB page.
pub struct Vmcb(Box<Page>);

impl Vmcb {
    /// A zeroed VMCB.
    pub fn new() -> Self {
        Vmcb(Page::new())
    }

    /// Its physical address (for VMRUN).
    pub fn pa(&self) -> u64 {
        self.0.pa()
    }

    pub fn r64(&self, off: usize) -> u64 {
        self.0.read(off, 8)
    }
    pub fn w64(&self, off: usize, v: u64) {
        self.0.write(off, 8, v)
    }
    pub fn r32(&self, off: usize) -> u32 {
        self.0.read(off, 4) as u32
    }
    pub fn w32(&self, off: usize, v: u32) {
        self.0.write(off, 4, v as u64)
    }
    pub fn r8(&self, off: usize) -> u8 {
        self.0.read(off, 1) as u8
    }
    pub fn w8(&self, off: usize, v: u8) {
        self.0.write(off, 1, v as u64)
    }

    pub fn seg(&self, off: usize) -> Seg {
        Seg {
            selector: self.0.read(off, 2) as u16,
            attrib: self.0.read(off + 2, 2) as u16,
            limit: self.0.read(off + 4, 4) as u32,
            base: self.0.read(off + 8, 8),
        }
    }

    pub fn set_seg(&self, off: usize, s: Seg) {
        self.0.write(off, 2, s.selector as u64);
        self.0.write(off + 2, 2, s.attrib as u64);
        self.0.write(off + 4, 4, s.limit as u64);
        self.0.write(off + 8, 8, s.base);
    }

    pub fn exitcode(&self) -> u64 {
        self.r64(off::EXITCODE)
    }
    pub fn rip(&self) -> u64 {
        self.r64(off::RIP)
    }
    pub fn set_rip(&self, v: u64) {
        self.w64(off::RIP, v)
    }
    pub fn cpl(&self) -> u8 {
        self.r8(off::CPL)
    }

    /// Queues an exception for the next VMRUN (EVENTINJ type 3; NMI type 2).
    pub fn inject_exception(&self, vector: u8, error_code: Option<u32>) {
        let ty: u64 = if vector == 2 { 2 } else { 3 };
        let mut v = vector as u64 | ty << 8 | 1 << 31;
        if let Some(e) = error_code {
            v |= 1 << 11 | (e as u64) << 32;
        }
        self.w64(off::EVENTINJ, v);
    }

    /// Queues an external interrupt (EVENTINJ type 0).
    pub fn inject_interrupt(&self, vector: u8) {
        self.w64(off::EVENTINJ, vector as u64 | 1 << 31);
    }
}

/// Does exception `vector` push an error code?
pub const fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_rights_round_trip() {
        assert_eq!(ar_to_attrib(0xC09B), 0xC9B);
        assert_eq!(ar_to_attrib(0xA09B), 0xA9B);
        assert_eq!(ar_to_attrib(0xC093), 0xC93);
        assert_eq!(ar_to_attrib(0x1_0082), 0);
        assert_eq!(attrib_to_ar(0xA9B), 0xA09B);
        assert_eq!(attrib_to_ar(0x8B), 0x8B);
        assert_eq!(attrib_to_ar(0) & (1 << 16), 1 << 16);
    }
}
