//! Protecting a 16 MiB kernel image (text, rodata, data, bss with unaligned
//! edges): ATTR.WR calls against the theoretical minimum, and planner time.
//!
//! `cargo bench -p ept` prints the call counts first, then criterion's timings.

use criterion::{criterion_group, criterion_main, Criterion};
use ept::{plan, Authority, Ept, GpaRange, PageState, Policy, LARGE_PAGE, PAGE};
use std::hint::black_box;
use tdcall::attr::L2Attr;
use tdcall::{L2Vm, Registers, Tdcall};

/// Accepts every call and counts them.
#[derive(Default)]
struct Counter(u64);

impl Tdcall for Counter {
    fn tdcall(&mut self, regs: &mut Registers) {
        self.0 += 1;
        regs.rax = 0;
    }
}

const BASE: u64 = 0x100_0000; // 16 MiB, 2 MiB aligned

/// A Linux-like layout: sizes taken from a typical x86-64 distribution kernel
/// scaled to 16 MiB, with section edges that are 4 KiB but not 2 MiB aligned.
fn layout() -> Vec<(GpaRange, PageState)> {
    let sections = [
        (0x0000_0000, 0x0076_3000, PageState::KernelText), // .text
        (0x0076_3000, 0x00A1_5000, PageState::Rodata),     // .rodata
        (0x00A1_5000, 0x00C8_9000, PageState::KernelData), // .data
        (0x00C8_9000, 0x0100_0000, PageState::KernelData), // .bss and the rest
    ];
    sections
        .iter()
        .map(|(s, e, st)| (GpaRange::new(BASE + s, BASE + e).unwrap(), *st))
        .collect()
}

/// The theoretical minimum number of calls: per 2 MiB block, one call if every
/// page ends with the same attribute, else one per page.
fn minimum(attr_of: impl Fn(u64) -> L2Attr) -> u64 {
    (BASE..BASE + 0x100_0000)
        .step_by(LARGE_PAGE as usize)
        .map(|block| {
            let first = attr_of(block);
            if (0..LARGE_PAGE / PAGE).all(|i| attr_of(block + i * PAGE) == first) {
                1
            } else {
                LARGE_PAGE / PAGE
            }
        })
        .sum()
}

fn protect(counter: &mut Counter) -> Ept {
    let mut ept = Ept::new(L2Vm::Vm1, Policy::LVBS);
    for (range, state) in layout() {
        ept.transition(counter, range, state, Authority::Guest)
            .unwrap();
    }
    ept
}

fn protect_batch(counter: &mut Counter) -> Ept {
    let mut ept = Ept::new(L2Vm::Vm1, Policy::LVBS);
    ept.transition_batch(counter, &layout(), Authority::Guest)
        .unwrap();
    ept
}

fn bench(c: &mut Criterion) {
    // One request per section (what PROTECT_MEMORY does range by range) ...
    let mut counter = Counter::default();
    let ept = protect(&mut counter);
    let min = minimum(|g| ept.attr(g));
    // ... and the whole layout planned at once.
    let changes: Vec<_> = (BASE..BASE + 0x100_0000)
        .step_by(PAGE as usize)
        .map(|g| (g, L2Attr::empty(), ept.attr(g)))
        .collect();
    let mut batch = Counter::default();
    protect_batch(&mut batch);
    println!(
        "protect 16 MiB kernel: {} ATTR.WR calls in one batch (theoretical minimum {min}), {} section by section",
        batch.0, counter.0
    );
    assert_eq!(batch.0, min);
    c.bench_function("plan 16 MiB kernel layout (4096 pages)", |b| {
        b.iter(|| black_box(plan::plan(L2Vm::Vm1, black_box(&changes), |g| ept.attr(g))))
    });
    c.bench_function(
        "protect 16 MiB kernel in one batch (check + plan + apply to a counter)",
        |b| b.iter(|| black_box(protect_batch(&mut Counter::default()))),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
