//! Run statistics, printed when the run ends (debug-exit write, fatal error).

use crate::emu_println;
use crate::hpet;
use alloc::collections::BTreeMap;
use spin::Mutex;
use tdcall::leaf::Leaf;

/// Counters.
pub struct Stats {
    /// TDCALLs from L1 by leaf number.
    pub tdcalls: BTreeMap<u16, u64>,
    /// Host-side ns spent in TDCALLs by leaf (#VMEXIT of L1 to its next VMRUN;
    /// for TDG.VP.ENTER this includes the time L2 runs).
    pub tdcall_ns: BTreeMap<u16, u64>,
    /// TDG.VP.ENTER results by (class, basic exit reason): class 0 = L2→L1,
    /// 0x1100 = host-routed exit resumed to L1.
    pub l2_exits: BTreeMap<(u32, u16), u64>,
    /// SVM exits of L1 by exit code.
    pub l1_svm_exits: BTreeMap<u64, u64>,
    /// SVM exits of L2 by exit code.
    pub l2_svm_exits: BTreeMap<u64, u64>,
    /// L2 SVM exits the engine and model completed without leaving TDG.VP.ENTER.
    pub l2_in_engine: u64,
    /// Host-side ns from an in-engine L2 #VMEXIT to the next L2 VMRUN.
    pub l2_in_engine_ns: u64,
    /// L2 exits that ended TDG.VP.ENTER.
    pub l2_to_l1: u64,
    /// ns from such an exit to the next L2 VMRUN (model → L1 handler → TDG.VP.ENTER).
    pub l2_to_l1_ns: u64,
    /// NPT leaf updates from page attribute/state changes.
    pub npt_updates: u64,
    /// NPT full scans (memory generation changes).
    pub npt_scans: u64,
    /// MBEC NPT switches.
    pub mbec_switches: u64,
    /// NPT leaves granted on the model's word where the NPT could not express the attribute.
    pub npt_overrides: u64,
    /// MRTD of the TD.
    pub mrtd: [u8; 48],
    /// ns timestamp when the TD started.
    pub start_ns: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            tdcalls: BTreeMap::new(),
            tdcall_ns: BTreeMap::new(),
            l2_exits: BTreeMap::new(),
            l1_svm_exits: BTreeMap::new(),
            l2_svm_exits: BTreeMap::new(),
            l2_in_engine: 0,
            l2_in_engine_ns: 0,
            l2_to_l1: 0,
            l2_to_l1_ns: 0,
            npt_updates: 0,
            npt_scans: 0,
            mbec_switches: 0,
            npt_overrides: 0,
            mrtd: [0; 48],
            start_ns: 0,
        }
    }
}

pub static STATS: Mutex<Option<Stats>> = Mutex::new(None);

/// Runs `f` on the counters.
pub fn with<R>(f: impl FnOnce(&mut Stats) -> R) -> R {
    let mut g = STATS.lock();
    f(g.get_or_insert_with(Stats::default))
}

fn leaf_name(n: u16) -> &'static str {
    match Leaf::from_number(n) {
        Some(Leaf::VpVmcall) => "TDG.VP.VMCALL",
        Some(Leaf::VpInfo) => "TDG.VP.INFO",
        Some(Leaf::MrRtmrExtend) => "TDG.MR.RTMR.EXTEND",
        Some(Leaf::VpVeinfoGet) => "TDG.VP.VEINFO.GET",
        Some(Leaf::MrReport) => "TDG.MR.REPORT",
        Some(Leaf::VpCpuidveSet) => "TDG.VP.CPUIDVE.SET",
        Some(Leaf::MemPageAccept) => "TDG.MEM.PAGE.ACCEPT",
        Some(Leaf::VmRd) => "TDG.VM.RD",
        Some(Leaf::VmWr) => "TDG.VM.WR",
        Some(Leaf::VpRd) => "TDG.VP.RD",
        Some(Leaf::VpWr) => "TDG.VP.WR",
        Some(Leaf::SysRd) => "TDG.SYS.RD",
        Some(Leaf::SysRdAll) => "TDG.SYS.RDALL",
        Some(Leaf::ServtdRd) => "TDG.SERVTD.RD",
        Some(Leaf::ServtdWr) => "TDG.SERVTD.WR",
        Some(Leaf::MrVerifyReport) => "TDG.MR.VERIFYREPORT",
        Some(Leaf::MemPageAttrRd) => "TDG.MEM.PAGE.ATTR.RD",
        Some(Leaf::MemPageAttrWr) => "TDG.MEM.PAGE.ATTR.WR",
        Some(Leaf::VpEnter) => "TDG.VP.ENTER",
        Some(Leaf::VpInvept) => "TDG.VP.INVEPT",
        Some(Leaf::VpInvgla) => "TDG.VP.INVGLA",
        None => "unknown",
    }
}

fn reason_name(r: u16) -> &'static str {
    use tdcall::vmx::reason as x;
    match r {
        x::EXCEPTION_NMI => "EXCEPTION_NMI",
        x::TRIPLE_FAULT => "TRIPLE_FAULT",
        x::CPUID => "CPUID",
        x::HLT => "HLT",
        x::VMCALL => "VMCALL",
        x::CR_ACCESS => "CR_ACCESS",
        x::IO_INSTRUCTION => "IO_INSTRUCTION",
        x::MSR_READ => "MSR_READ",
        x::MSR_WRITE => "MSR_WRITE",
        x::INVALID_GUEST_STATE => "INVALID_GUEST_STATE",
        x::GDTR_IDTR_ACCESS => "GDTR_IDTR_ACCESS",
        x::LDTR_TR_ACCESS => "LDTR_TR_ACCESS",
        x::EPT_VIOLATION => "EPT_VIOLATION",
        x::PREEMPTION_TIMER => "PREEMPTION_TIMER",
        x::XSETBV => "XSETBV",
        x::TDCALL => "TDCALL",
        _ => "other",
    }
}

fn svm_name(code: u64) -> &'static str {
    use crate::vmcb::exit as e;
    match code {
        0x00..=0x0F => "CR_READ",
        0x10..=0x1F => "CR_WRITE",
        e::UD => "#UD",
        e::IDTR_READ => "IDTR_READ",
        e::GDTR_READ => "GDTR_READ",
        e::LDTR_READ => "LDTR_READ",
        e::TR_READ => "TR_READ",
        e::LDTR_WRITE => "LDTR_WRITE",
        e::TR_WRITE => "TR_WRITE",
        e::IDTR_WRITE => "IDTR_WRITE",
        e::GDTR_WRITE => "GDTR_WRITE",
        e::CPUID => "CPUID",
        e::HLT => "HLT",
        e::IOIO => "IOIO",
        e::MSR => "MSR",
        e::SHUTDOWN => "SHUTDOWN",
        e::NPF => "NPF",
        0x8D => "XSETBV",
        e::INTR => "INTR",
        0x64 => "VINTR",
        e::INVALID => "INVALID",
        _ => "other",
    }
}

fn avg_us(ns: u64, n: u64) -> (u64, u64) {
    if n == 0 {
        return (0, 0);
    }
    let tenths = ns / n / 100;
    (tenths / 10, tenths % 10)
}

/// Prints everything.
pub fn print() {
    let now = hpet::now_ns();
    let g = STATS.lock();
    let Some(s) = g.as_ref() else { return };
    emu_println!("==== statistics ====");
    let total: u64 = s.tdcalls.values().sum();
    emu_println!("TDCALLs from L1: {total}");
    for (leaf, n) in &s.tdcalls {
        let ns = s.tdcall_ns.get(leaf).copied().unwrap_or(0);
        let (a, b) = avg_us(ns, *n);
        emu_println!(
            "  {:<22} {n:>7}  {a:>5}.{b} us each (host side)",
            leaf_name(*leaf)
        );
    }
    let l2_total: u64 = s.l2_exits.values().sum();
    emu_println!("L2 exits delivered to L1 (TDG.VP.ENTER returns): {l2_total}");
    for ((class, reason), n) in &s.l2_exits {
        let route = if *class == 0 { "L2->L1" } else { "host->L1" };
        emu_println!(
            "  {:<20} ({reason:>2}) {route:<8} {n}",
            reason_name(*reason)
        );
    }
    let svm_l2: u64 = s.l2_svm_exits.values().sum();
    emu_println!("L2 SVM exits: {svm_l2}");
    for (code, n) in &s.l2_svm_exits {
        emu_println!("  {:#06x} {:<10} {n}", code, svm_name(*code));
    }
    let svm_l1: u64 = s.l1_svm_exits.values().sum();
    emu_println!("L1 SVM exits: {svm_l1}");
    for (code, n) in &s.l1_svm_exits {
        emu_println!("  {:#06x} {:<10} {n}", code, svm_name(*code));
    }
    let (a, b) = avg_us(s.l2_in_engine_ns, s.l2_in_engine);
    emu_println!(
        "L2 exits completed inside TDG.VP.ENTER: {} (host side {a}.{b} us each)",
        s.l2_in_engine
    );
    let (a, b) = avg_us(s.l2_to_l1_ns, s.l2_to_l1);
    emu_println!(
        "L2 exits through L1: {} (L2 #VMEXIT -> model -> L1 -> TDG.VP.ENTER -> L2 VMRUN: {a}.{b} us each, VMRUN/#VMEXIT not included)",
        s.l2_to_l1
    );
    emu_println!(
        "NPT: {} scans, {} leaf updates, {} MBEC switches, {} overrides",
        s.npt_scans,
        s.npt_updates,
        s.mbec_switches,
        s.npt_overrides
    );
    let ms = now.saturating_sub(s.start_ns) / 1_000_000;
    emu_println!("TD run time: {ms} ms");
    let mut hex = [0u8; 96];
    for (i, b) in s.mrtd.iter().enumerate() {
        let d = b"0123456789abcdef";
        hex[2 * i] = d[(b >> 4) as usize];
        hex[2 * i + 1] = d[(b & 15) as usize];
    }
    emu_println!("MRTD {}", core::str::from_utf8(&hex).unwrap_or("?"));
}
