//! `loader measure`: MRTD and the expected RTMRs of an IGVM file, computed
//! from the file alone with the `igvm` crate's parser (independent of the
//! `no_std` reader the emulator uses).

use std::collections::{BTreeMap, HashMap};

use igvm::{IgvmDirectiveHeader, IgvmFile, IsolationType};
use lvbs_loader::layout::{NUM_VCPUS, PAGE_SIZE};
use lvbs_loader::BootInfo;
use paravisor::heki::HekiConfig;
use paravisor::measure::{self, boot_events, BootPayload, Digest48, Event, NUM_RTMRS};
use tdcall::L2Vm;
use tdx_model::measure::MrtdBuilder;

use crate::Error;

/// What a verifier expects of a TD booted from one image.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// MRTD.
    pub mrtd: Digest48,
    /// RTMR0..3 after the paravisor's boot events (RTMR2 before any admission).
    pub rtmr: [Digest48; NUM_RTMRS],
    /// The boot events, in extend order.
    pub boot_events: Vec<Event>,
    /// The BootInfo the paravisor will read (one vCPU).
    pub boot_info: BootInfo,
    /// Pages added.
    pub pages: usize,
    /// Pages whose contents MRTD covers.
    pub measured_pages: usize,
}

/// The policy text the paravisor measures into RTMR0 for `boot_info`: its
/// HEKI configuration for the probe layout, or for a Linux guest
/// (BootInfo flag LINUX). Only the policy knobs enter the text, not the
/// layout.
pub fn reference_policy(boot_info: &BootInfo) -> Vec<u8> {
    let config = if boot_info.flags & BootInfo::FLAG_LINUX != 0 {
        HekiConfig::linux(L2Vm::Vm1, (0, 0), Vec::new())
    } else {
        HekiConfig::new(L2Vm::Vm1, (0, 0), Vec::new())
    };
    measure::policy_text(&config)
}

fn area_bytes(areas: &HashMap<u32, (u64, Vec<u8>, Vec<u32>)>, idx: u32) -> Result<Vec<u8>, Error> {
    let (n, init, vp) = areas
        .get(&idx)
        .ok_or_else(|| Error(format!("parameter area {idx} is not declared")))?;
    let mut b = init.clone();
    b.resize(*n as usize, 0);
    for &o in vp {
        let o = o as usize;
        b.get_mut(o..o + 4)
            .ok_or_else(|| Error(format!("VP count offset {o:#x} outside area {idx}")))?
            .copy_from_slice(&NUM_VCPUS.to_le_bytes());
    }
    Ok(b)
}

/// MRTD and the expected RTMRs of the IGVM `file`.
pub fn measure(file: &[u8]) -> Result<Measurement, Error> {
    let igvm = IgvmFile::new_from_binary(file, Some(IsolationType::Tdx))
        .map_err(|e| Error(format!("not a TDX IGVM file: {e}")))?;
    let mut mrtd = MrtdBuilder::new();
    let mut memory: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut areas: HashMap<u32, (u64, Vec<u8>, Vec<u32>)> = HashMap::new();
    let (mut pages, mut measured_pages) = (0, 0);
    let zero = [0u8; PAGE_SIZE as usize];
    for d in igvm.directives() {
        match d {
            IgvmDirectiveHeader::ParameterArea {
                number_of_bytes,
                parameter_area_index,
                initial_data,
            } => {
                areas.insert(
                    *parameter_area_index,
                    (*number_of_bytes, initial_data.clone(), Vec::new()),
                );
            }
            IgvmDirectiveHeader::VpCount(p) => {
                if let Some(a) = areas.get_mut(&p.parameter_area_index) {
                    a.2.push(p.byte_offset);
                }
            }
            IgvmDirectiveHeader::ParameterInsert(p) => {
                let bytes = area_bytes(&areas, p.parameter_area_index)?;
                for (i, chunk) in bytes.chunks(PAGE_SIZE as usize).enumerate() {
                    let gpa = p.gpa + i as u64 * PAGE_SIZE;
                    mrtd.page_add(gpa);
                    pages += 1;
                    memory.insert(gpa, chunk.to_vec());
                }
            }
            IgvmDirectiveHeader::PageData {
                gpa, flags, data, ..
            } => {
                if flags.shared() || flags.is_2mb_page() {
                    return Err(Error(format!("page {gpa:#x}: shared or 2 MiB page data")));
                }
                let mut page = zero;
                page[..data.len()].copy_from_slice(data);
                if flags.unmeasured() {
                    mrtd.page_add(*gpa);
                } else {
                    mrtd.add_measured_page(*gpa, &page);
                    measured_pages += 1;
                }
                pages += 1;
                memory.insert(*gpa, page.to_vec());
            }
            other => {
                return Err(Error(format!(
                    "unsupported IGVM directive for a TDX image: {other}"
                )))
            }
        }
    }
    let read = |gpa: u64, len: u64, what: &str| -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(len as usize);
        let mut at = gpa;
        while at < gpa + len {
            let base = at & !(PAGE_SIZE - 1);
            let page = memory
                .get(&base)
                .ok_or_else(|| Error(format!("{what}: page {base:#x} is not in the image")))?;
            let off = (at - base) as usize;
            let n = ((gpa + len - at) as usize).min(PAGE_SIZE as usize - off);
            out.extend_from_slice(&page[off..off + n]);
            at += n as u64;
        }
        Ok(out)
    };
    let bi_bytes = read(BootInfo::GPA, BootInfo::SIZE as u64, "BootInfo")?;
    let boot_info = BootInfo::from_bytes(&bi_bytes)
        .map_err(|e| Error(format!("BootInfo in the image: {e:?}")))?;
    let kernel = read(
        boot_info.l2_base,
        boot_info.l2_image_end.saturating_sub(boot_info.l2_base),
        "L2 kernel",
    )?;
    let initrd = match boot_info.initrd_size {
        0 => None,
        n => Some(read(boot_info.initrd_gpa, n, "initrd")?),
    };
    let cmdline = match boot_info.cmdline_size {
        0 => None,
        n => Some(read(boot_info.cmdline_gpa, n, "command line")?),
    };
    let policy = reference_policy(&boot_info);
    let events = boot_events(&BootPayload {
        bootinfo: &bi_bytes,
        policy: &policy,
        kernel_gpa: boot_info.l2_base,
        kernel: &kernel,
        initrd: initrd.as_deref().map(|i| (boot_info.initrd_gpa, i)),
        cmdline: cmdline.as_deref(),
    });
    Ok(Measurement {
        mrtd: mrtd.finish(),
        rtmr: measure::replay(&events),
        boot_events: events,
        boot_info,
        pages,
        measured_pages,
    })
}
