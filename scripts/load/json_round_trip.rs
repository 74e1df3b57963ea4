//! The yardstick of the write path's CPU cost: the CPU time of one `serde_json` parse of a
//! body into a `Value` and one serialisation back, with the server's allocator and
//! serde_json features. `scripts/load/run.sh` divides the server's CPU per POST by it.
//!
//! Usage: `json-round-trip FILE [ITERATIONS]`; prints microseconds of CPU per round trip.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// CPU time of this thread so far, in nanoseconds (first field of schedstat).
fn thread_cpu_ns() -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("Linux schedstat");
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("schedstat starts with the run time in ns")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: json-round-trip FILE [ITERATIONS]");
    let iterations: u32 = args.next().map_or(20_000, |n| n.parse().expect("a count"));
    let body = std::fs::read(&path).expect("a readable file");
    let round_trip = || {
        let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        std::hint::black_box(serde_json::to_vec(&value).expect("serialises"));
    };
    for _ in 0..iterations / 10 {
        round_trip();
    }
    // The median of seven blocks: a block that another process interrupted (a server still
    // flushing, a compile) does not move it.
    let mut blocks: Vec<f64> = (0..7)
        .map(|_| {
            let start = thread_cpu_ns();
            for _ in 0..iterations / 7 {
                round_trip();
            }
            (thread_cpu_ns() - start) as f64 / f64::from(iterations / 7) / 1000.0
        })
        .collect();
    blocks.sort_by(f64::total_cmp);
    let per = blocks[3];
    println!("{per:.1}");
}
