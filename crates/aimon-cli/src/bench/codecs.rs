//! `aimon bench --codecs`: how densely and how fast aimon's chunk codec ([`aimon::chunk`],
//! pcodec blocks) stores samples, against a Gorilla-style XOR codec, on the demo's series and on
//! five value shapes, at three chunk sizes. It needs no store.
//!
//! The Gorilla codec ([`gorilla`]) is the comparison baseline, never storage: aimon does not
//! write it. It follows the Gorilla paper (Pelkonen et al., VLDB 2015) with one change: the
//! paper's widest timestamp bucket holds 32 bits of seconds, ours 64 bits, because aimon's
//! timestamps are microseconds and every `i64` must survive.

use std::hint::black_box;
use std::time::Instant;

use chrono::TimeDelta;
use serde::Serialize;

use aimon::chunk::{self, ChunkError, Samples};

use crate::cli::Global;
use crate::error::{CliError, Result};
use crate::output::{self, thousands};
use crate::progress;
use crate::sim::{Fleet, METRICS, Rng};

/// The demo's fleet as `aimon demo` simulates it by default: seed 3, 20 agents, a day at 10 s.
const DEMO_SEED: u64 = 3;
const DEMO_AGENTS: u32 = 20;
/// Samples of every series: a day at 10 s.
const TICKS: usize = 8_640;
const INTERVAL_MICROS: i64 = 10_000_000;
/// The day the series cover, 2024-05-01T00:00:00Z: the load curve of the simulation follows the
/// time of day, so a fixed day keeps the demo's samples the same on every run.
const DAY_START_MICROS: i64 = 1_714_521_600_000_000;
/// The chunk sizes asked for: an hour at 10 s, and two longer windows. A series holds a day
/// ([`TICKS`]), so a chunk holds at most that many.
const CHUNK_SIZES: [usize; 3] = [360, 2_000, 10_000];
/// Timed passes of each encode and decode, at least this many and for at least
/// [`MIN_SECONDS`]; the fastest counts. A fast codec's pass over a row's chunks takes about a
/// millisecond, which a moment of another process's work on a shared machine could spoil in
/// every one of a few passes.
const MIN_PASSES: usize = 5;
const MIN_SECONDS: f64 = 0.2;
/// Seed of the synthetic shapes.
const SHAPES_SEED: u64 = 19;

/// A codec under comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    /// `aimon_core::chunk`, format version 1: pcodec blocks, a header and a CRC-32.
    Aimon,
    /// [`gorilla`]: delta-of-delta timestamps, XOR values.
    Gorilla,
}

impl Codec {
    fn encode(self, samples: &Samples) -> Vec<u8> {
        match self {
            Codec::Aimon => chunk::encode(samples),
            Codec::Gorilla => gorilla::encode(samples),
        }
    }

    fn decode(self, bytes: &[u8]) -> Result<Samples, ChunkError> {
        match self {
            Codec::Aimon => chunk::decode(bytes),
            Codec::Gorilla => gorilla::decode(bytes),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Codec::Aimon => "aimon",
            Codec::Gorilla => "gorilla",
        }
    }
}

/// A value shape: its name and its series, each a day of samples at 10 s.
struct Shape {
    name: String,
    /// Whether the shape is one of the demo's metrics (summed into the demo's total).
    demo: bool,
    series: Vec<Samples>,
}

/// The timestamps of every series: a day at 10 s, in microseconds.
fn day_timestamps(ticks: usize) -> Vec<i64> {
    (0..ticks as i64)
        .map(|i| DAY_START_MICROS + i * INTERVAL_MICROS)
        .collect()
}

/// The demo's samples, one shape per metric, each with one series per agent, simulated as
/// `aimon demo` does over `ticks` ticks of 10 s from [`DAY_START_MICROS`].
fn demo_shapes(agents: u32, ticks: usize) -> Vec<Shape> {
    let end = aimon::time::from_micros(DAY_START_MICROS + (ticks as i64 - 1) * INTERVAL_MICROS);
    let mut fleet = Fleet::new(
        agents,
        DEMO_SEED,
        "codecs",
        end,
        TimeDelta::microseconds(INTERVAL_MICROS),
        ticks as u64,
    );
    let mut shapes: Vec<Shape> = METRICS
        .iter()
        .map(|(name, ..)| Shape {
            name: format!("demo {name}"),
            demo: true,
            series: (0..agents)
                .map(|_| Samples {
                    timestamps: Vec::with_capacity(ticks),
                    values: Vec::with_capacity(ticks),
                })
                .collect(),
        })
        .collect();
    // A batch holds every agent's metrics, agent by agent, in the order of METRICS.
    while let Some(batch) = fleet.next_batch(360) {
        for (i, metric) in batch.metrics.iter().enumerate() {
            let series = &mut shapes[i % METRICS.len()].series[i / METRICS.len()];
            for v in &metric.values {
                series.timestamps.push(aimon::time::to_micros(v.timestamp));
                series.values.push(v.value);
            }
        }
    }
    shapes
}

/// The value shapes besides the demo's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Synthetic {
    Integers,
    Decimals,
    ConstantRuns,
    Noise,
    Counter,
}

impl Synthetic {
    const ALL: [Synthetic; 5] = [
        Synthetic::Integers,
        Synthetic::Decimals,
        Synthetic::ConstantRuns,
        Synthetic::Noise,
        Synthetic::Counter,
    ];

    fn name(self) -> &'static str {
        match self {
            Synthetic::Integers => "integers as f64 (token counts)",
            Synthetic::Decimals => "fixed decimals (cost, 4 places)",
            Synthetic::ConstantRuns => "constant runs",
            Synthetic::Noise => "full-precision noise (latency)",
            Synthetic::Counter => "monotonic counter",
        }
    }

    /// One series of `ticks` values.
    fn values(self, rng: &mut Rng, ticks: usize) -> Vec<f64> {
        let tokens = |rng: &mut Rng| (1_500.0 + 500.0 * rng.normal()).round().max(1.0);
        match self {
            Synthetic::Integers => (0..ticks).map(|_| tokens(rng)).collect(),
            Synthetic::Decimals => (0..ticks)
                .map(|_| ((0.0123 + 0.004 * rng.normal()).max(0.0) * 10_000.0).round() / 10_000.0)
                .collect(),
            Synthetic::ConstantRuns => {
                // A setting or a replica count: it holds for 1 to 400 samples, then changes.
                const LEVELS: [f64; 7] = [0.0, 1.0, 2.0, 4.0, 8.0, 0.25, 0.7];
                let mut out = Vec::with_capacity(ticks);
                while out.len() < ticks {
                    let run = 1 + (rng.next_u64() % 400) as usize;
                    let level = *rng.pick(&LEVELS);
                    out.extend(std::iter::repeat_n(level, run.min(ticks - out.len())));
                }
                out
            }
            Synthetic::Noise => (0..ticks)
                .map(|_| 300.0 * (0.15 * rng.normal()).exp())
                .collect(),
            Synthetic::Counter => {
                // Tokens since the agent started: it ran before the day began.
                let mut total = (rng.unit() * 1e9).round();
                (0..ticks)
                    .map(|_| {
                        total += tokens(rng);
                        total
                    })
                    .collect()
            }
        }
    }
}

/// The synthetic shapes, `series` series of `ticks` samples each, the same on every run.
fn synthetic_shapes(series: usize, ticks: usize) -> Vec<Shape> {
    let mut rng = Rng::new(SHAPES_SEED);
    let timestamps = day_timestamps(ticks);
    Synthetic::ALL
        .into_iter()
        .map(|shape| Shape {
            name: shape.name().to_owned(),
            demo: false,
            series: (0..series)
                .map(|_| Samples {
                    timestamps: timestamps.clone(),
                    values: shape.values(&mut rng, ticks),
                })
                .collect(),
        })
        .collect()
}

/// Every series cut into chunks of `size` consecutive samples; a series' last chunk may be
/// shorter.
fn chunks(series: &[Samples], size: usize) -> Vec<Samples> {
    series
        .iter()
        .flat_map(|s| {
            s.timestamps
                .chunks(size)
                .zip(s.values.chunks(size))
                .map(|(timestamps, values)| Samples {
                    timestamps: timestamps.to_vec(),
                    values: values.to_vec(),
                })
        })
        .collect()
}

/// Whether two sample sets are equal bit for bit (`-0.0` is not `0.0`, NaN payloads count).
fn same_bits(a: &Samples, b: &Samples) -> bool {
    a.timestamps == b.timestamps
        && a.values.len() == b.values.len()
        && a.values
            .iter()
            .zip(&b.values)
            .all(|(x, y)| x.to_bits() == y.to_bits())
}

/// What one codec did with one set of chunks.
#[derive(Debug, Clone, Copy, Default)]
struct Measured {
    bytes: u64,
    encode_seconds: f64,
    decode_seconds: f64,
}

impl std::ops::AddAssign for Measured {
    fn add_assign(&mut self, other: Measured) {
        self.bytes += other.bytes;
        self.encode_seconds += other.encode_seconds;
        self.decode_seconds += other.decode_seconds;
    }
}

/// The fastest of timed runs of `pass`: at least [`MIN_PASSES`], and at least
/// [`MIN_SECONDS`] in all. Returns the seconds and the last pass's result.
fn fastest<T>(mut pass: impl FnMut() -> Result<T>) -> Result<(f64, T)> {
    let (mut best, mut passes, mut total) = (f64::INFINITY, 0, 0.0);
    loop {
        let started = Instant::now();
        let out = black_box(pass()?);
        let seconds = started.elapsed().as_secs_f64();
        best = best.min(seconds);
        passes += 1;
        total += seconds;
        if passes >= MIN_PASSES && total >= MIN_SECONDS {
            return Ok((best, out));
        }
    }
}

/// Encodes and decodes every chunk, timing the fastest pass of each, and checks that every
/// chunk decodes to its samples bit for bit.
fn measure(codec: Codec, chunks: &[Samples], shape: &str) -> Result<Measured> {
    let (encode_seconds, encoded) = fastest(|| {
        Ok(chunks
            .iter()
            .map(|c| codec.encode(black_box(c)))
            .collect::<Vec<Vec<u8>>>())
    })?;
    let (decode_seconds, decoded) = fastest(|| {
        encoded
            .iter()
            .map(|bytes| codec.decode(black_box(bytes)))
            .collect::<Result<Vec<Samples>, _>>()
            .map_err(|e| {
                CliError::new(format!(
                    "a {} chunk of {shape} does not decode: {e}",
                    codec.name()
                ))
            })
    })?;
    if decoded.len() != chunks.len() || !decoded.iter().zip(chunks).all(|(a, b)| same_bits(a, b)) {
        return Err(CliError::new(format!(
            "{} does not round-trip {shape} bit for bit",
            codec.name()
        )));
    }
    Ok(Measured {
        bytes: encoded.iter().map(|b| b.len() as u64).sum(),
        encode_seconds,
        decode_seconds,
    })
}

/// One codec's figures in one row of the report.
#[derive(Debug, Serialize)]
struct CodecFigures {
    bytes: u64,
    bytes_per_sample: f64,
    /// Million samples per second, the fastest of the passes.
    encode_msamples_per_second: f64,
    decode_msamples_per_second: f64,
}

impl CodecFigures {
    fn of(m: Measured, samples: u64) -> Self {
        let rate = |seconds: f64| samples as f64 / seconds.max(1e-12) / 1e6;
        CodecFigures {
            bytes: m.bytes,
            bytes_per_sample: m.bytes as f64 / samples as f64,
            encode_msamples_per_second: rate(m.encode_seconds),
            decode_msamples_per_second: rate(m.decode_seconds),
        }
    }
}

#[derive(Debug, Serialize)]
struct Row {
    shape: String,
    /// The chunk size asked for; a chunk holds at most a series' day of samples.
    chunk_size: usize,
    /// The most samples a chunk of this row holds.
    largest_chunk: usize,
    chunks: u64,
    samples: u64,
    aimon: CodecFigures,
    gorilla: CodecFigures,
}

impl Row {
    fn new(
        shape: &str,
        chunk_size: usize,
        largest_chunk: usize,
        (chunks, samples): (u64, u64),
        [aimon, gorilla]: [Measured; 2],
    ) -> Row {
        Row {
            shape: shape.to_owned(),
            chunk_size,
            largest_chunk,
            chunks,
            samples,
            aimon: CodecFigures::of(aimon, samples),
            gorilla: CodecFigures::of(gorilla, samples),
        }
    }

    /// The codec with fewer bytes, and how many times fewer.
    fn smaller(&self) -> (Option<Codec>, f64) {
        let (a, g) = (self.aimon.bytes as f64, self.gorilla.bytes as f64);
        if a < g {
            (Some(Codec::Aimon), g / a)
        } else if g < a {
            (Some(Codec::Gorilla), a / g)
        } else {
            (None, 1.0)
        }
    }
}

#[derive(Debug, Serialize)]
struct CodecReport {
    /// What the two codecs are.
    aimon: &'static str,
    gorilla: &'static str,
    demo: String,
    /// Timed passes of each encode and decode: at least this many, and at least
    /// `min_seconds` in all; the fastest counts.
    min_passes: usize,
    min_seconds: f64,
    rows: Vec<Row>,
}

/// `aimon bench --codecs`: bytes per sample, encode and decode speed of both codecs.
pub fn codecs_bench(global: &Global) -> Result<()> {
    let mut shapes = demo_shapes(DEMO_AGENTS, TICKS);
    shapes.extend(synthetic_shapes(DEMO_AGENTS as usize, TICKS));
    let bar = progress::bar(
        (shapes.len() * CHUNK_SIZES.len()) as u64,
        "measurements",
        global,
    );
    let mut rows = Vec::new();
    // Per chunk size, the demo's six metrics together: (chunks, samples) and each codec's.
    let mut demo_totals = [((0, 0), [Measured::default(); 2]); CHUNK_SIZES.len()];
    for (k, shape) in shapes.iter().enumerate() {
        for (total, size) in demo_totals.iter_mut().zip(CHUNK_SIZES) {
            let chunks = chunks(&shape.series, size);
            let counts = (
                chunks.len() as u64,
                chunks.iter().map(|c| c.len() as u64).sum::<u64>(),
            );
            let measured = [
                measure(Codec::Aimon, &chunks, &shape.name)?,
                measure(Codec::Gorilla, &chunks, &shape.name)?,
            ];
            if shape.demo {
                total.0.0 += counts.0;
                total.0.1 += counts.1;
                total.1[0] += measured[0];
                total.1[1] += measured[1];
            }
            let largest = chunks.iter().map(Samples::len).max().unwrap_or(0);
            rows.push(Row::new(&shape.name, size, largest, counts, measured));
            bar.inc(1);
        }
        // The demo's total follows its last metric.
        if shape.demo && !shapes.get(k + 1).is_some_and(|next| next.demo) {
            for ((counts, measured), size) in demo_totals.into_iter().zip(CHUNK_SIZES) {
                rows.push(Row::new(
                    "demo total",
                    size,
                    size.min(TICKS),
                    counts,
                    measured,
                ));
            }
        }
    }
    bar.finish_and_clear();
    let report = CodecReport {
        aimon: "aimon_core::chunk format 1: pcodec timestamp and value blocks, version byte, \
                varints and CRC-32 (the whole chunk)",
        gorilla: "Gorilla (VLDB 2015), written for this bench: delta-of-delta timestamps in \
                  buckets 0/7/9/12/64 bits, values XORed with the previous one (leading zeros \
                  and meaningful bits), a varint sample count",
        demo: format!("the demo's samples (seed {DEMO_SEED}, {DEMO_AGENTS} agents, 24 h at 10 s)"),
        min_passes: MIN_PASSES,
        min_seconds: MIN_SECONDS,
        rows,
    };
    if global.json {
        return output::json(&report);
    }
    print(&report);
    Ok(())
}

fn print(report: &CodecReport) {
    output::line(format!(
        "Chunk codecs on {}, {} series, and five value shapes of {DEMO_AGENTS} series each, \
         a day at 10 s: bytes per sample (timestamp and value, whole chunk) and million samples \
         per second, the fastest of at least {} passes over {} s.",
        report.demo,
        thousands(u64::from(DEMO_AGENTS) * METRICS.len() as u64),
        report.min_passes,
        report.min_seconds
    ));
    output::line(format!("aimon: {}.", report.aimon));
    output::line(format!("gorilla: {}.", report.gorilla));
    let mut table = output::table(
        &[
            "shape",
            "chunk",
            "aimon B/sample",
            "gorilla B/sample",
            "aimon enc M/s",
            "gorilla enc M/s",
            "aimon dec M/s",
            "gorilla dec M/s",
            "smaller",
        ],
        &[
            "chunk",
            "aimon B/sample",
            "gorilla B/sample",
            "aimon enc M/s",
            "gorilla enc M/s",
            "aimon dec M/s",
            "gorilla dec M/s",
        ],
    );
    for row in &report.rows {
        let (smaller, times) = row.smaller();
        table.add_row(vec![
            row.shape.clone(),
            thousands(row.largest_chunk as u64),
            format!("{:.3}", row.aimon.bytes_per_sample),
            format!("{:.3}", row.gorilla.bytes_per_sample),
            format!("{:.1}", row.aimon.encode_msamples_per_second),
            format!("{:.1}", row.gorilla.encode_msamples_per_second),
            format!("{:.1}", row.aimon.decode_msamples_per_second),
            format!("{:.1}", row.gorilla.decode_msamples_per_second),
            smaller.map_or_else(
                || "same".to_owned(),
                |c| format!("{} {times:.2}×", c.name()),
            ),
        ]);
    }
    output::line(table);
    output::line(format!(
        "Every series holds a day ({} samples): its last chunk of 2,000 holds 640, and at \
         10,000 the whole day is one chunk.",
        thousands(TICKS as u64)
    ));
    output::line(format!("Smaller: {}.", winners(&report.rows)));
    output::line(format!("Faster: {}.", speed(&report.rows)));
}

/// Which codec is smaller, per shape, in one line: `gorilla at 360, aimon at 2,000 and 8,640
/// for a; aimon at every size for the other 11 shapes`.
fn winners(rows: &[Row]) -> String {
    let name = |c: Option<Codec>| c.map_or("neither", Codec::name);
    let mut outcomes: Vec<(String, Vec<&str>)> = Vec::new();
    for shape_rows in rows.chunk_by(|a, b| a.shape == b.shape) {
        let per_size: Vec<(Option<Codec>, usize)> = shape_rows
            .iter()
            .map(|r| (r.smaller().0, r.largest_chunk))
            .collect();
        let outcome = if per_size.iter().all(|(c, _)| *c == per_size[0].0) {
            format!("{} at every size", name(per_size[0].0))
        } else {
            per_size
                .chunk_by(|a, b| a.0 == b.0)
                .map(|run| {
                    let sizes: Vec<String> = run
                        .iter()
                        .map(|(_, size)| thousands(*size as u64))
                        .collect();
                    format!("{} at {}", name(run[0].0), sizes.join(" and "))
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        match outcomes.iter_mut().find(|(o, _)| *o == outcome) {
            Some((_, shapes)) => shapes.push(&shape_rows[0].shape),
            None => outcomes.push((outcome, vec![&shape_rows[0].shape])),
        }
    }
    // The most common outcome last, as "the other N shapes".
    outcomes.sort_by_key(|(_, shapes)| shapes.len());
    let last = outcomes.len().saturating_sub(1);
    outcomes
        .iter()
        .enumerate()
        .map(|(i, (outcome, shapes))| match (i == last, shapes.len()) {
            (true, _) if i == 0 => format!("{outcome} for every shape"),
            (true, n) if n > 1 => format!("{outcome} for the other {n} shapes"),
            _ => format!("{outcome} for {}", shapes.join(", ")),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Which codec encodes and which decodes faster, and by how much.
fn speed(rows: &[Row]) -> String {
    let part = |what: &str, rate: fn(&CodecFigures) -> f64| {
        let aimon_faster = rows
            .iter()
            .filter(|r| rate(&r.aimon) > rate(&r.gorilla))
            .count();
        let ratios = rows.iter().map(|r| rate(&r.gorilla) / rate(&r.aimon));
        let low = ratios.clone().fold(f64::INFINITY, f64::min);
        let high = ratios.fold(0.0, f64::max);
        let n = rows.len();
        match aimon_faster {
            0 => {
                format!("gorilla {what} faster in every row ({low:.1}× to {high:.1}× aimon's rate)")
            }
            k if k == n => format!(
                "aimon {what} faster in every row ({:.1}× to {:.1}× gorilla's rate)",
                1.0 / high,
                1.0 / low
            ),
            k => format!(
                "aimon {what} faster in {k} of {n} rows, gorilla in the other {} (gorilla at \
                 {low:.2}× to {high:.2}× aimon's rate)",
                n - k
            ),
        }
    };
    format!(
        "{}; {}",
        part("encodes", |f| f.encode_msamples_per_second),
        part("decodes", |f| f.decode_msamples_per_second)
    )
}

/// The Gorilla codec, the comparison baseline (aimon never stores it).
///
/// ```text
/// varint      sample count n
/// bits        first timestamp (64 bits), first value (64 bits), then per sample:
///             the timestamp's delta-of-delta D (the first delta's predecessor is 0):
///               D = 0: '0'; D in [-63, 64]: '10' + 7 bits; [-255, 256]: '110' + 9;
///               [-2047, 2048]: '1110' + 12; otherwise '1111' + 64
///             the value XORed with the previous one, X:
///               X = 0: '0'; the meaningful bits fit the previous window: '10' + those bits;
///               otherwise '11' + leading zeros (5 bits, at most 31) + meaningful bit count
///               (6 bits, 64 written as 0) + the meaningful bits
/// padding     zero bits to the next byte
/// ```
pub(crate) mod gorilla {
    use aimon::chunk::{ChunkError, Samples};

    /// Delta-of-delta buckets: control bits, their count, and the width of the value.
    const BUCKETS: [(u64, u32, u32); 3] = [(0b10, 2, 7), (0b110, 3, 9), (0b1110, 4, 12)];

    /// Encodes samples in any order; every `i64` timestamp and `f64` bit pattern survives.
    pub fn encode(samples: &Samples) -> Vec<u8> {
        let n = samples.len();
        let mut out = Vec::with_capacity(n / 2 + 32);
        push_varint(&mut out, n as u64);
        let mut w = BitWriter::new(out);
        let (mut prev_ts, mut prev_delta, mut prev_bits) = (0i64, 0i64, 0u64);
        // The window of meaningful bits of the last value that opened one.
        let mut window: Option<(u32, u32)> = None;
        for (i, (&ts, value)) in samples.timestamps.iter().zip(&samples.values).enumerate() {
            let bits = value.to_bits();
            if i == 0 {
                w.write(ts as u64, 64);
                w.write(bits, 64);
            } else {
                let delta = ts.wrapping_sub(prev_ts);
                write_dod(&mut w, delta.wrapping_sub(prev_delta));
                prev_delta = delta;
                write_xor(&mut w, bits ^ prev_bits, &mut window);
            }
            prev_ts = ts;
            prev_bits = bits;
        }
        w.finish()
    }

    /// Decodes what [`encode`] wrote; an error, never a panic, for bytes it did not write.
    pub fn decode(bytes: &[u8]) -> Result<Samples, ChunkError> {
        let mut rest = bytes;
        let n = take_varint(&mut rest)?;
        // Every sample after the first takes at least two bits.
        if n > 0 && (n - 1) / 4 > rest.len() as u64 {
            return Err(ChunkError::Truncated);
        }
        let n = n as usize;
        let mut r = BitReader::new(rest);
        let mut out = Samples {
            timestamps: Vec::with_capacity(n),
            values: Vec::with_capacity(n),
        };
        let (mut prev_ts, mut prev_delta, mut prev_bits) = (0i64, 0i64, 0u64);
        let mut window: Option<(u32, u32)> = None;
        for i in 0..n {
            if i == 0 {
                prev_ts = r.read(64)? as i64;
                prev_bits = r.read(64)?;
            } else {
                prev_delta = prev_delta.wrapping_add(read_dod(&mut r)?);
                prev_ts = prev_ts.wrapping_add(prev_delta);
                prev_bits ^= read_xor(&mut r, &mut window)?;
            }
            out.timestamps.push(prev_ts);
            out.values.push(f64::from_bits(prev_bits));
        }
        Ok(out)
    }

    fn write_dod(w: &mut BitWriter, dod: i64) {
        if dod == 0 {
            w.write(0, 1);
            return;
        }
        for (control, control_bits, width) in BUCKETS {
            let half = 1i64 << (width - 1);
            if (1 - half..=half).contains(&dod) {
                w.write(control, control_bits);
                w.write(dod as u64, width);
                return;
            }
        }
        w.write(0b1111, 4);
        w.write(dod as u64, 64);
    }

    fn read_dod(r: &mut BitReader) -> Result<i64, ChunkError> {
        let mut ones = 0;
        while ones < 4 && r.read(1)? == 1 {
            ones += 1;
        }
        let width = match ones {
            0 => return Ok(0),
            1..=3 => BUCKETS[ones - 1].2,
            _ => return Ok(r.read(64)? as i64),
        };
        let raw = r.read(width)?;
        // [1 - half, half] in `width` bits: what lies above `half` was negative.
        Ok(if raw > 1 << (width - 1) {
            raw as i64 - (1i64 << width)
        } else {
            raw as i64
        })
    }

    fn write_xor(w: &mut BitWriter, xor: u64, window: &mut Option<(u32, u32)>) {
        if xor == 0 {
            w.write(0, 1);
            return;
        }
        let leading = xor.leading_zeros().min(31);
        let trailing = xor.trailing_zeros();
        match *window {
            Some((l, t)) if leading >= l && trailing >= t => {
                w.write(0b10, 2);
                w.write(xor >> t, 64 - l - t);
            }
            _ => {
                let meaningful = 64 - leading - trailing;
                w.write(0b11, 2);
                w.write(u64::from(leading), 5);
                w.write(u64::from(meaningful & 63), 6);
                w.write(xor >> trailing, meaningful);
                *window = Some((leading, trailing));
            }
        }
    }

    fn read_xor(r: &mut BitReader, window: &mut Option<(u32, u32)>) -> Result<u64, ChunkError> {
        if r.read(1)? == 0 {
            return Ok(0);
        }
        let (leading, trailing) = if r.read(1)? == 0 {
            window.ok_or_else(|| ChunkError::Malformed("a value reuses no window".to_owned()))?
        } else {
            let leading = r.read(5)? as u32;
            let meaningful = match r.read(6)? as u32 {
                0 => 64,
                m => m,
            };
            let trailing = 64u32
                .checked_sub(leading + meaningful)
                .ok_or_else(|| ChunkError::Malformed("a window wider than 64 bits".to_owned()))?;
            *window = Some((leading, trailing));
            (leading, trailing)
        };
        Ok(r.read(64 - leading - trailing)? << trailing)
    }

    /// Bits, most significant first, appended to a byte vector.
    struct BitWriter {
        out: Vec<u8>,
        /// Pending bits, left-aligned.
        acc: u64,
        used: u32,
    }

    impl BitWriter {
        fn new(out: Vec<u8>) -> Self {
            BitWriter {
                out,
                acc: 0,
                used: 0,
            }
        }

        /// Appends the low `n` bits of `v` (`n` ≤ 64).
        fn write(&mut self, v: u64, n: u32) {
            if n == 0 {
                return;
            }
            let v = if n == 64 { v } else { v & ((1 << n) - 1) };
            let free = 64 - self.used;
            if n < free {
                self.acc |= v << (free - n);
                self.used += n;
            } else {
                // `free` ≥ 1: the accumulator is flushed whenever it fills.
                let rest = n - free;
                self.acc |= v >> rest;
                self.out.extend_from_slice(&self.acc.to_be_bytes());
                self.acc = if rest == 0 { 0 } else { v << (64 - rest) };
                self.used = rest;
            }
        }

        fn finish(mut self) -> Vec<u8> {
            let bytes = self.used.div_ceil(8) as usize;
            self.out.extend_from_slice(&self.acc.to_be_bytes()[..bytes]);
            self.out
        }
    }

    /// Reads what a [`BitWriter`] wrote.
    struct BitReader<'a> {
        bytes: &'a [u8],
        pos: usize,
        /// Bits not read yet, left-aligned; below the `avail` valid ones lie zeros or the
        /// stream's next bits, so that refilling ORs in the same bits again.
        acc: u64,
        avail: u32,
    }

    impl<'a> BitReader<'a> {
        fn new(bytes: &'a [u8]) -> Self {
            BitReader {
                bytes,
                pos: 0,
                acc: 0,
                avail: 0,
            }
        }

        /// Called with `avail` < 32.
        fn refill(&mut self) {
            if let Some(word) = self.bytes.get(self.pos..self.pos + 8) {
                let word = u64::from_be_bytes(word.try_into().expect("8 bytes"));
                self.acc |= word >> self.avail;
                let whole = (64 - self.avail) / 8;
                self.pos += whole as usize;
                self.avail += whole * 8;
            } else {
                while self.avail <= 56 && self.pos < self.bytes.len() {
                    self.acc |= u64::from(self.bytes[self.pos]) << (56 - self.avail);
                    self.avail += 8;
                    self.pos += 1;
                }
            }
        }

        /// The next `n` bits (`n` ≤ 64).
        fn read(&mut self, n: u32) -> Result<u64, ChunkError> {
            if n > 32 {
                let high = self.read(n - 32)?;
                return Ok((high << 32) | self.read(32)?);
            }
            if n == 0 {
                return Ok(0);
            }
            if self.avail < n {
                self.refill();
                if self.avail < n {
                    return Err(ChunkError::Truncated);
                }
            }
            let v = self.acc >> (64 - n);
            self.acc <<= n;
            self.avail -= n;
            Ok(v)
        }
    }

    fn push_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn take_varint(rest: &mut &[u8]) -> Result<u64, ChunkError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, tail) = rest.split_first().ok_or(ChunkError::Truncated)?;
            *rest = tail;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ChunkError::Malformed(
            "the sample count is too long".to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(s: &Samples) -> Samples {
        gorilla::decode(&gorilla::encode(s)).unwrap()
    }

    fn bits(values: &[f64]) -> Vec<u64> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn gorilla_round_trips_edge_values_bit_for_bit() {
        let values = [
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            f64::MIN_POSITIVE / 3.0,
            -5e-324,
            5e-324,
            1e308,
            -f64::MAX,
            f64::MAX,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::from_bits(0x7ff8_0000_dead_beef),
            0.1,
            1.0 / 3.0,
            -0.0,
        ];
        let s = Samples {
            timestamps: (0..values.len() as i64).map(|i| i * 7 - 3).collect(),
            values: values.to_vec(),
        };
        let back = round_trip(&s);
        assert_eq!(back.timestamps, s.timestamps);
        assert_eq!(bits(&back.values), bits(&s.values));
        for one in [i64::MIN, -1, 0, i64::MAX] {
            let s = Samples {
                timestamps: vec![one],
                values: vec![-0.0],
            };
            assert!(same_bits(&round_trip(&s), &s));
        }
        let extremes = Samples {
            timestamps: vec![i64::MIN, i64::MAX, i64::MIN, 0],
            values: vec![1.0, 2.0, 3.0, 4.0],
        };
        assert!(same_bits(&round_trip(&extremes), &extremes));
        // Neighbours: a narrow window, then an XOR of more than 31 leading zeros that opens a
        // wider one, then one that reuses it.
        let one = 1.0f64.to_bits();
        let neighbours = Samples {
            timestamps: (0..5).collect(),
            values: [0, 1 << 40, 1 << 40 ^ 1, 1 << 40 ^ 1 ^ 1 << 2, 1 << 63]
                .map(|x| f64::from_bits(one ^ x))
                .to_vec(),
        };
        assert!(same_bits(&round_trip(&neighbours), &neighbours));
        assert!(round_trip(&Samples::default()).is_empty());
    }

    #[test]
    fn every_delta_of_delta_bucket_round_trips_at_its_edges() {
        let mut timestamps = vec![1_000_000, 1_010_000];
        for dod in [
            0,
            1,
            -1,
            64,
            -63,
            65,
            -64,
            256,
            -255,
            257,
            -256,
            2_048,
            -2_047,
            2_049,
            -2_048,
            1 << 40,
            -(1 << 40),
        ] {
            let n = timestamps.len();
            let delta = timestamps[n - 1] - timestamps[n - 2] + dod;
            timestamps.push(timestamps[n - 1] + delta);
        }
        let s = Samples {
            values: vec![1.5; timestamps.len()],
            timestamps,
        };
        assert!(same_bits(&round_trip(&s), &s));
    }

    #[test]
    fn a_constant_at_regular_intervals_costs_two_bits_a_sample() {
        let s = Samples {
            timestamps: day_timestamps(8_000),
            values: vec![42.0; 8_000],
        };
        let bytes = gorilla::encode(&s);
        // The count, two 64-bit firsts, the first delta in the 64-bit bucket and an equal
        // value, then '0' and '0' a sample.
        assert_eq!(
            bytes.len(),
            2 + (64 + 64 + 68 + 1 + 2 * 7_998usize).div_ceil(8)
        );
    }

    #[test]
    fn damaged_gorilla_bytes_are_an_error_or_other_samples_never_a_panic() {
        let s = Samples {
            timestamps: day_timestamps(50),
            values: (0..50).map(|i| f64::from(i) * 0.1).collect(),
        };
        let bytes = gorilla::encode(&s);
        for len in 0..bytes.len() {
            assert!(
                gorilla::decode(&bytes[..len]).is_err(),
                "truncated to {len}"
            );
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0xff;
            let _ = gorilla::decode(&bad);
        }
    }

    #[test]
    fn the_shapes_are_the_same_on_every_run() {
        let (a, b) = (synthetic_shapes(3, 2_000), synthetic_shapes(3, 2_000));
        let (c, d) = (demo_shapes(2, 720), demo_shapes(2, 720));
        for (x, y) in a.iter().zip(&b).chain(c.iter().zip(&d)) {
            assert_eq!(x.name, y.name);
            assert_eq!(x.series.len(), y.series.len());
            for (s, t) in x.series.iter().zip(&y.series) {
                assert!(same_bits(s, t), "{}", x.name);
            }
        }
        assert_eq!(a.len(), Synthetic::ALL.len());
        assert_eq!(c.len(), METRICS.len());
    }

    #[test]
    fn the_demo_shapes_are_the_demos_series_of_one_metric_each() {
        let shapes = demo_shapes(2, 720);
        let names: Vec<_> = shapes.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names[0], "demo llm.prompt_tokens");
        assert_eq!(names[5], "demo agent.tool_calls");
        for shape in &shapes {
            assert_eq!(shape.series.len(), 2);
            for s in &shape.series {
                assert_eq!(s.timestamps, day_timestamps(720));
                assert_eq!(s.values.len(), 720);
            }
        }
        // Token counts are integers; latency is not.
        assert!(shapes[0].series[0].values.iter().all(|v| v.fract() == 0.0));
        assert!(shapes[2].series[0].values.iter().any(|v| v.fract() != 0.0));
    }

    #[test]
    fn each_synthetic_shape_is_what_its_name_says() {
        let shapes = synthetic_shapes(2, 2_000);
        let values = |shape: Synthetic| -> Vec<f64> {
            shapes[Synthetic::ALL.iter().position(|s| *s == shape).unwrap()]
                .series
                .iter()
                .flat_map(|s| s.values.clone())
                .collect()
        };
        assert!(
            values(Synthetic::Integers)
                .iter()
                .all(|v| v.fract() == 0.0 && *v >= 1.0)
        );
        for v in values(Synthetic::Decimals) {
            assert_eq!(v, (v * 10_000.0).round() / 10_000.0);
        }
        let runs = values(Synthetic::ConstantRuns)
            .windows(2)
            .filter(|w| w[0] != w[1])
            .count();
        assert!((1..100).contains(&runs), "{runs} changes");
        let noise = values(Synthetic::Noise);
        assert!(noise.iter().all(|v| *v > 0.0 && v.fract() != 0.0));
        for s in &shapes[Synthetic::ALL.len() - 1].series {
            assert!(s.values.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn a_day_cuts_into_chunks_of_at_most_the_size() {
        let series = vec![Samples {
            timestamps: day_timestamps(TICKS),
            values: vec![1.0; TICKS],
        }];
        let sizes =
            |size| -> Vec<usize> { chunks(&series, size).iter().map(Samples::len).collect() };
        assert_eq!(sizes(360), vec![360; 24]);
        assert_eq!(sizes(2_000), vec![2_000, 2_000, 2_000, 2_000, 640]);
        assert_eq!(sizes(10_000), vec![8_640]);
        let cut = chunks(&series, 2_000);
        assert_eq!(
            cut[1].timestamps[0],
            DAY_START_MICROS + 2_000 * INTERVAL_MICROS
        );
    }

    #[test]
    fn the_summary_names_the_exceptions_then_the_other_shapes() {
        let row = |shape: &str, size: usize, aimon: u64, gorilla: u64| {
            let bytes = |bytes| Measured {
                bytes,
                encode_seconds: 1.0,
                decode_seconds: 1.0,
            };
            Row::new(shape, size, size, (1, 100), [bytes(aimon), bytes(gorilla)])
        };
        let rows = [
            row("a", 360, 10, 20),
            row("a", 2_000, 10, 20),
            row("runs", 360, 20, 10),
            row("runs", 2_000, 10, 20),
            row("b", 360, 10, 20),
            row("b", 2_000, 10, 20),
        ];
        assert_eq!(
            winners(&rows),
            "gorilla at 360, aimon at 2,000 for runs; aimon at every size for the other 2 shapes"
        );
        assert_eq!(winners(&rows[..2]), "aimon at every size for every shape");
    }

    /// Every class of `f64` bit pattern.
    fn any_bits() -> impl Strategy<Value = u64> {
        prop_oneof![
            // Random bits: any double, NaN payloads and infinities included.
            any::<u64>(),
            Just((-0.0f64).to_bits()),
            Just(0.0f64.to_bits()),
            // Subnormals of either sign.
            (1u64..1 << 52),
            (1u64..1 << 52).prop_map(|m| m | 1 << 63),
            Just(1e308f64.to_bits()),
            Just((-1e308f64).to_bits()),
            (-1_000_000i64..1_000_000).prop_map(|i| (i as f64).to_bits()),
            (-100_000i64..100_000).prop_map(|i| (i as f64 / 10_000.0).to_bits()),
        ]
    }

    /// Steps between timestamps that reach every delta-of-delta bucket.
    fn any_step() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(INTERVAL_MICROS),
            (-3_000i64..3_000).prop_map(|jitter| INTERVAL_MICROS + jitter),
            any::<i64>(),
        ]
    }

    proptest! {
        #[test]
        fn gorilla_round_trips_any_timestamps_and_bit_patterns(
            pairs in proptest::collection::vec((any::<i64>(), any_bits()), 0..300)
        ) {
            let s = Samples {
                timestamps: pairs.iter().map(|p| p.0).collect(),
                values: pairs.iter().map(|p| f64::from_bits(p.1)).collect(),
            };
            let back = round_trip(&s);
            prop_assert_eq!(&back.timestamps, &s.timestamps);
            prop_assert_eq!(bits(&back.values), bits(&s.values));
        }

        /// Runs of values that stay within the low `wiggle` bits of one value (0: constant),
        /// at steps that reach every timestamp bucket.
        #[test]
        fn gorilla_round_trips_runs_of_neighbours_and_regular_steps(
            runs in proptest::collection::vec(
                (any_bits(), 0u32..=64, 1usize..20, any_step()),
                1..60,
            ),
            noise in any::<u64>(),
        ) {
            let mut s = Samples::default();
            let mut ts = DAY_START_MICROS;
            let mut rng = crate::sim::Rng::new(noise);
            for (value, wiggle, run, step) in runs {
                let mask = u64::MAX.checked_shr(64 - wiggle).unwrap_or(0);
                for _ in 0..run {
                    s.timestamps.push(ts);
                    s.values.push(f64::from_bits(value ^ (rng.next_u64() & mask)));
                    ts = ts.wrapping_add(step);
                }
            }
            let back = round_trip(&s);
            prop_assert_eq!(&back.timestamps, &s.timestamps);
            prop_assert_eq!(bits(&back.values), bits(&s.values));
        }

        #[test]
        fn random_bytes_never_panic_the_gorilla_decoder(
            bytes in proptest::collection::vec(any::<u8>(), 0..200)
        ) {
            let _ = gorilla::decode(&bytes);
        }
    }
}
