//! Chunks: the samples of one series under one tag set within one epoch-aligned time window,
//! encoded together, with a [`Summary`] that answers `metric_history` without decoding them.
//!
//! Drivers that store samples themselves (SQLite today) keep a window's samples as one chunk
//! instead of one row a sample. A chunk is exact: every timestamp and every `f64` bit pattern
//! (`-0.0`, subnormals, `1e308`) decodes as it was encoded.
//!
//! ## Format, version 1
//! ```text
//! byte 0      format version (1)
//! varint      sample count n (≥ 1)
//! varint      length of the timestamp block, then the block: n i64 microseconds, pcodec
//! …           the value block: n f64, pcodec, up to the checksum
//! 4 bytes     CRC-32 (little endian) of everything before it
//! ```
//! Timestamps are strictly increasing. Both blocks are [pcodec](https://docs.rs/pco)
//! standalone files: pcodec picks delta encoding for the timestamps (regular intervals cost a
//! few bits a chunk) and, for the values, finds integers held as `f64`, fixed decimals,
//! constant runs and the common high bits of noisy values. Against a Gorilla-style XOR codec
//! (`aimon bench --codecs`; the README's "Storage density" table) it is smaller on every shape
//! measured but one: in one-hour chunks the demo's samples take 3.39 bytes each (Gorilla 4.69),
//! fixed decimals 1.43 (7.49), full-precision noise 6.80 (7.07); Gorilla wins only a value
//! constant over long runs in one-hour chunks (0.342 bytes against 0.369). The price is speed:
//! there pcodec encodes about 3 million samples/s (Gorilla 120 million) and decodes about 45
//! million (Gorilla 100 million). A later codec gets its own version byte; old chunks keep
//! decoding.
//!
//! The checksum makes a damaged chunk an error ([`ChunkError::Checksum`]) instead of wrong
//! numbers; the driver names the series and window in the `Corrupted` error it returns.

use std::fmt;

use crate::downsample::{BucketAggregate, CompensatedSum};

/// The format version written by [`encode`].
pub const FORMAT_V1: u8 = 1;

/// The pcodec compression level: its default, which measured within 1% of the maximum on the
/// demo's samples at a third of the encoding time.
const LEVEL: usize = pco::DEFAULT_COMPRESSION_LEVEL;

/// Why a chunk does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkError {
    /// Its bytes do not match their checksum: the chunk was damaged.
    Checksum,
    /// It was written by a newer aimon (an unknown format version).
    Version(u8),
    /// It ends too early or its lengths disagree.
    Truncated,
    /// A block does not decode, or decodes to something that is not a chunk.
    Malformed(String),
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::Checksum => f.write_str("its checksum does not match (damaged bytes)"),
            ChunkError::Version(v) => write!(f, "unknown chunk format version {v}"),
            ChunkError::Truncated => f.write_str("it is truncated"),
            ChunkError::Malformed(why) => write!(f, "it is malformed: {why}"),
        }
    }
}

impl std::error::Error for ChunkError {}

/// The start of the window holding `micros`: windows are aligned to multiples of `window`
/// microseconds since the Unix epoch.
pub fn window_start(micros: i64, window: i64) -> i64 {
    micros - micros.rem_euclid(window)
}

/// Samples in time order: parallel columns, timestamps strictly increasing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    /// Microseconds since the Unix epoch, strictly increasing.
    pub timestamps: Vec<i64>,
    /// The value at each timestamp.
    pub values: Vec<f64>,
}

impl Samples {
    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// Samples from `(timestamp, value)` pairs in any order; where a timestamp repeats, the
    /// last pair wins (a later write overwrites an earlier one).
    pub fn from_unsorted(mut pairs: Vec<(i64, f64)>) -> Samples {
        // A stable sort keeps equal timestamps in write order; the last of each run wins.
        pairs.sort_by_key(|&(ts, _)| ts);
        let mut out = Samples {
            timestamps: Vec::with_capacity(pairs.len()),
            values: Vec::with_capacity(pairs.len()),
        };
        for (ts, value) in pairs {
            if out.timestamps.last() == Some(&ts) {
                *out.values.last_mut().expect("parallel columns") = value;
            } else {
                out.timestamps.push(ts);
                out.values.push(value);
            }
        }
        out
    }

    /// `self` overwritten by `newer`: the union of both, `newer`'s value where both hold a
    /// timestamp. Both must be in time order; so is the result.
    pub fn overwrite(mut self, newer: &Samples) -> Samples {
        if self.is_empty() {
            return newer.clone();
        }
        // The common case, a later fragment after an earlier one: appended in place.
        match (self.timestamps.last(), newer.timestamps.first()) {
            (_, None) => return self,
            (Some(last), Some(first)) if last < first => {
                self.timestamps.extend_from_slice(&newer.timestamps);
                self.values.extend_from_slice(&newer.values);
                return self;
            }
            _ => {}
        }
        let mut out = Samples {
            timestamps: Vec::with_capacity(self.len() + newer.len()),
            values: Vec::with_capacity(self.len() + newer.len()),
        };
        let (mut i, mut j) = (0, 0);
        while i < self.len() || j < newer.len() {
            let take_newer = match (self.timestamps.get(i), newer.timestamps.get(j)) {
                (Some(a), Some(b)) if a == b => {
                    i += 1;
                    true
                }
                (Some(a), Some(b)) => b < a,
                (None, _) => true,
                (_, None) => false,
            };
            if take_newer {
                out.timestamps.push(newer.timestamps[j]);
                out.values.push(newer.values[j]);
                j += 1;
            } else {
                out.timestamps.push(self.timestamps[i]);
                out.values.push(self.values[i]);
                i += 1;
            }
        }
        out
    }

    /// The samples whose timestamps lie in `[start, end)`.
    pub fn range(&self, start: i64, end: i64) -> std::ops::Range<usize> {
        let lo = self.timestamps.partition_point(|&t| t < start);
        let hi = self.timestamps.partition_point(|&t| t < end);
        lo..hi.max(lo)
    }

    /// The summary of these samples, `None` when there are none.
    pub fn summary(&self) -> Option<Summary> {
        summarize(&self.timestamps, &self.values)
    }
}

/// The summary of the samples in two parallel columns (timestamps in time order), `None` when
/// there are none.
pub fn summarize(timestamps: &[i64], values: &[f64]) -> Option<Summary> {
    let (&first_ts, &last_ts) = (timestamps.first()?, timestamps.last()?);
    let mut sum = CompensatedSum::default();
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for &v in values {
        sum.add(v);
        min = min.min(v);
        max = max.max(v);
    }
    Some(Summary {
        count: values.len() as u64,
        sum,
        min,
        max,
        first: (first_ts, *values.first()?),
        last: (last_ts, *values.last()?),
    })
}

/// What `metric_history` needs of a chunk's samples: every aggregation merges from these.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// How many samples.
    pub count: u64,
    /// Their compensated sum, as [`crate::downsample::Downsampler`] keeps it.
    pub sum: CompensatedSum,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// The earliest sample: (timestamp µs, value).
    pub first: (i64, f64),
    /// The latest sample: (timestamp µs, value).
    pub last: (i64, f64),
}

impl Summary {
    /// A CRC-32 of every field, bit for bit: a store keeps it next to the summary's columns
    /// and checks it before trusting them.
    pub fn checksum(&self) -> u32 {
        let (sum, compensation, scaled) = self.sum.parts();
        let mut h = crc32fast::Hasher::new();
        h.update(&self.count.to_le_bytes());
        for v in [
            sum,
            compensation,
            self.min,
            self.max,
            self.first.1,
            self.last.1,
        ] {
            h.update(&v.to_bits().to_le_bytes());
        }
        h.update(&[u8::from(scaled)]);
        h.update(&self.first.0.to_le_bytes());
        h.update(&self.last.0.to_le_bytes());
        h.finalize()
    }

    /// The summary as an aggregate of one history bucket, for
    /// [`crate::downsample::Downsampler::merge`]; `series_id` and `tags_json` order `first`
    /// and `last` after the timestamp.
    pub fn aggregate(&self, series_id: &str, tags_json: &str) -> BucketAggregate {
        BucketAggregate {
            count: self.count,
            sum: self.sum,
            min: self.min,
            max: self.max,
            first: (
                (self.first.0, series_id.to_owned(), tags_json.to_owned()),
                self.first.1,
            ),
            last: (
                (self.last.0, series_id.to_owned(), tags_json.to_owned()),
                self.last.1,
            ),
        }
    }
}

/// The length of [`Summary::to_bytes`].
pub const SUMMARY_BYTES: usize = 77;

impl Summary {
    /// The summary as 77 bytes, for stores that keep it as a blob next to the chunk (Redis):
    /// count, sum, compensation, scaled flag, min, max, first (timestamp, value), last
    /// (timestamp, value), all little endian, then [`Summary::checksum`].
    pub fn to_bytes(&self) -> [u8; SUMMARY_BYTES] {
        let (sum, compensation, scaled) = self.sum.parts();
        let mut out = [0u8; SUMMARY_BYTES];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&self.count.to_le_bytes());
        put(&sum.to_bits().to_le_bytes());
        put(&compensation.to_bits().to_le_bytes());
        put(&[u8::from(scaled)]);
        put(&self.min.to_bits().to_le_bytes());
        put(&self.max.to_bits().to_le_bytes());
        put(&self.first.0.to_le_bytes());
        put(&self.first.1.to_bits().to_le_bytes());
        put(&self.last.0.to_le_bytes());
        put(&self.last.1.to_bits().to_le_bytes());
        put(&self.checksum().to_le_bytes());
        out
    }

    /// Reads [`Summary::to_bytes`]; a wrong length, flag or checksum is an error, never a
    /// wrong summary.
    pub fn from_bytes(bytes: &[u8]) -> Result<Summary, ChunkError> {
        if bytes.len() != SUMMARY_BYTES {
            return Err(ChunkError::Truncated);
        }
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let float = |at: usize| f64::from_bits(word(at));
        let scaled = match bytes[24] {
            0 => false,
            1 => true,
            other => return Err(ChunkError::Malformed(format!("scaled flag {other}"))),
        };
        let summary = Summary {
            count: word(0),
            sum: CompensatedSum::from_parts(float(8), float(16), scaled),
            min: float(25),
            max: float(33),
            first: (word(41) as i64, float(49)),
            last: (word(57) as i64, float(65)),
        };
        let check = u32::from_le_bytes(bytes[73..77].try_into().expect("4 bytes"));
        if summary.checksum() != check || summary.count == 0 {
            return Err(ChunkError::Checksum);
        }
        Ok(summary)
    }
}

/// Folds samples in time order into `downsampler`, one [`Summary`] per run of samples in one
/// bucket of `step` µs, keeping those in `[lo, hi)`: how a store aggregates the chunks a
/// bucket boundary splits. `series_id` and `tags_json` order `first` and `last`.
#[allow(clippy::too_many_arguments)]
pub fn fold_buckets(
    samples: &Samples,
    lo: i64,
    hi: i64,
    step: i64,
    group: Option<&str>,
    series_id: &str,
    tags_json: &str,
    downsampler: &mut crate::downsample::Downsampler,
) {
    use crate::downsample::bucket_start;
    let range = samples.range(lo, hi);
    let (ts, values) = (&samples.timestamps[range.clone()], &samples.values[range]);
    let mut start = 0;
    while start < ts.len() {
        let bucket = bucket_start(ts[start], step);
        let end = ts[start..].partition_point(|&t| t < bucket.saturating_add(step)) + start;
        let summary =
            summarize(&ts[start..end], &values[start..end]).expect("a run is never empty");
        downsampler.merge(
            group.map(str::to_owned),
            bucket,
            summary.aggregate(series_id, tags_json),
        );
        start = end;
    }
}

/// Encodes samples as a version-1 chunk. `samples` must not be empty, with timestamps strictly
/// increasing ([`Samples`] keeps them so).
pub fn encode(samples: &Samples) -> Vec<u8> {
    debug_assert!(!samples.is_empty());
    debug_assert!(samples.timestamps.windows(2).all(|w| w[0] < w[1]));
    let config = pco::ChunkConfig::default().with_compression_level(LEVEL);
    // pcodec fails only on an invalid configuration, never on data.
    let ts = pco::standalone::simple_compress(&samples.timestamps, &config)
        .expect("a valid pcodec configuration");
    let values = pco::standalone::simple_compress(&samples.values, &config)
        .expect("a valid pcodec configuration");
    let mut out = Vec::with_capacity(ts.len() + values.len() + 16);
    out.push(FORMAT_V1);
    push_varint(&mut out, samples.len() as u64);
    push_varint(&mut out, ts.len() as u64);
    out.extend_from_slice(&ts);
    out.extend_from_slice(&values);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a chunk written by [`encode`] (of any known version), checking its checksum and
/// shape: never a panic, whatever the bytes.
pub fn decode(bytes: &[u8]) -> Result<Samples, ChunkError> {
    let Some(body_len) = bytes.len().checked_sub(4) else {
        return Err(ChunkError::Truncated);
    };
    let (body, crc) = bytes.split_at(body_len);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(ChunkError::Checksum);
    }
    let (&version, mut rest) = body.split_first().ok_or(ChunkError::Truncated)?;
    if version != FORMAT_V1 {
        return Err(ChunkError::Version(version));
    }
    let n = take_varint(&mut rest)?;
    let ts_len = take_varint(&mut rest)?;
    let ts_len = usize::try_from(ts_len).map_err(|_| ChunkError::Truncated)?;
    if ts_len > rest.len() {
        return Err(ChunkError::Truncated);
    }
    let (ts_block, value_block) = rest.split_at(ts_len);
    let timestamps = pco_decode::<i64>(ts_block)?;
    let values = pco_decode::<f64>(value_block)?;
    if timestamps.len() as u64 != n || values.len() as u64 != n || n == 0 {
        return Err(ChunkError::Malformed(format!(
            "{n} samples announced, {} timestamps and {} values found",
            timestamps.len(),
            values.len()
        )));
    }
    if !timestamps.windows(2).all(|w| w[0] < w[1]) {
        return Err(ChunkError::Malformed("timestamps out of order".to_owned()));
    }
    Ok(Samples { timestamps, values })
}

fn pco_decode<T: pco::data_types::Number>(block: &[u8]) -> Result<Vec<T>, ChunkError> {
    // pcodec returns errors for bad input; the checksum already rejected accidental damage, and
    // a panic on a crafted block must still not reach the caller.
    std::panic::catch_unwind(|| pco::standalone::simple_decompress::<T>(block))
        .map_err(|_| ChunkError::Malformed("a block does not decode".to_owned()))?
        .map_err(|e| ChunkError::Malformed(e.to_string()))
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(rest: &mut &[u8]) -> Result<u64, ChunkError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&byte, tail) = rest.split_first().ok_or(ChunkError::Truncated)?;
        *rest = tail;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(ChunkError::Malformed("a length is too long".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples(pairs: &[(i64, f64)]) -> Samples {
        Samples::from_unsorted(pairs.to_vec())
    }

    fn assert_bits_equal(a: &Samples, b: &Samples) {
        assert_eq!(a.timestamps, b.timestamps);
        let bits = |s: &Samples| s.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(a), bits(b));
    }

    #[test]
    fn summary_bytes_round_trip_and_every_damage_is_caught() {
        let mut big = CompensatedSum::default();
        for v in [f64::MAX, f64::MAX, -1.5] {
            big.add(v);
        }
        for sum in [
            samples(&[(-7, -0.0), (3, 1e-310), (9, 2.5)])
                .summary()
                .unwrap()
                .sum,
            big,
        ] {
            let summary = Summary {
                sum,
                ..samples(&[(-7, -0.0), (3, 1e-310), (9, 2.5)])
                    .summary()
                    .unwrap()
            };
            let bytes = summary.to_bytes();
            let back = Summary::from_bytes(&bytes).unwrap();
            assert_eq!(back.checksum(), summary.checksum());
            assert_eq!(back.to_bytes(), bytes);
            for at in 0..bytes.len() {
                for mask in [1u8, 0x80, 0xff] {
                    let mut bad = bytes;
                    bad[at] ^= mask;
                    assert!(Summary::from_bytes(&bad).is_err(), "byte {at} mask {mask}");
                }
            }
            for len in 0..bytes.len() {
                assert_eq!(
                    Summary::from_bytes(&bytes[..len]).unwrap_err(),
                    ChunkError::Truncated
                );
            }
        }
    }

    #[test]
    fn edge_values_round_trip_bit_for_bit() {
        let values = [
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            f64::MIN_POSITIVE / 3.0,
            -5e-324,
            1e308,
            -f64::MAX,
            f64::MAX,
            0.1,
            1.0 / 3.0,
        ];
        let s = Samples {
            timestamps: (0..values.len() as i64).map(|i| i * 7 - 3).collect(),
            values: values.to_vec(),
        };
        assert_bits_equal(&decode(&encode(&s)).unwrap(), &s);
        let one = samples(&[(i64::MIN, -0.0)]);
        assert_bits_equal(&decode(&encode(&one)).unwrap(), &one);
        let extremes = samples(&[(i64::MIN, 1.0), (i64::MAX, 2.0)]);
        assert_bits_equal(&decode(&encode(&extremes)).unwrap(), &extremes);
    }

    #[test]
    fn regular_intervals_and_integers_cost_almost_nothing() {
        let s = Samples {
            timestamps: (0..360)
                .map(|i| 1_700_000_000_000_000 + i * 10_000_000)
                .collect(),
            values: (0..360).map(|i| f64::from(i % 7) * 100.0).collect(),
        };
        let bytes = encode(&s);
        assert!(bytes.len() < 360, "{} bytes for 360 samples", bytes.len());
    }

    #[test]
    fn every_damaged_byte_is_detected() {
        let s = samples(&[(10, 1.5), (20, 2.5), (35, -0.0), (50, 1e308)]);
        let bytes = encode(&s);
        for i in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[i] ^= flip;
                assert!(decode(&bad).is_err(), "byte {i} ^ {flip:#x} went unnoticed");
            }
        }
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn an_unknown_version_is_named() {
        let mut bytes = encode(&samples(&[(1, 1.0)]));
        bytes[0] = 9;
        let body = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..body]).to_le_bytes();
        bytes[body..].copy_from_slice(&crc);
        assert_eq!(decode(&bytes), Err(ChunkError::Version(9)));
    }

    #[test]
    fn later_writes_overwrite_earlier_ones() {
        let s = Samples::from_unsorted(vec![(3, 1.0), (1, 2.0), (3, 4.0)]);
        assert_eq!(s.timestamps, [1, 3]);
        assert_eq!(s.values, [2.0, 4.0]);
        let merged = samples(&[(1, 1.0), (2, 2.0), (4, 4.0)]).overwrite(&samples(&[
            (0, 9.0),
            (2, 8.0),
            (5, 7.0),
        ]));
        assert_eq!(merged.timestamps, [0, 1, 2, 4, 5]);
        assert_eq!(merged.values, [9.0, 1.0, 8.0, 4.0, 7.0]);
    }

    #[test]
    fn windows_align_to_the_epoch() {
        assert_eq!(window_start(7_200_000_001, 3_600_000_000), 7_200_000_000);
        assert_eq!(window_start(-1, 3_600_000_000), -3_600_000_000);
    }

    #[test]
    fn the_summary_checksum_covers_every_field() {
        let summary = samples(&[(1, 1.0), (2, 3.0)]).summary().unwrap();
        let mut other = summary;
        other.last.1 = 3.000_000_000_000_001;
        assert_ne!(summary.checksum(), other.checksum());
        let mut other = summary;
        other.first.0 += 1;
        assert_ne!(summary.checksum(), other.checksum());
    }

    fn any_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            // Every bit pattern of a finite double.
            any::<u64>()
                .prop_map(f64::from_bits)
                .prop_filter("finite", |v| v.is_finite()),
            (-1_000_000i64..1_000_000).prop_map(|i| i as f64),
            (-100_000i64..100_000).prop_map(|i| i as f64 / 100.0),
            Just(-0.0),
            Just(0.0),
        ]
    }

    proptest! {
        #[test]
        fn any_samples_round_trip(
            pairs in proptest::collection::vec((any::<i64>(), any_f64()), 1..400)
        ) {
            let s = Samples::from_unsorted(pairs);
            let back = decode(&encode(&s)).unwrap();
            prop_assert_eq!(&back.timestamps, &s.timestamps);
            let bits = |s: &Samples| s.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&back), bits(&s));
        }

        #[test]
        fn the_summary_is_the_plain_computation(
            values in proptest::collection::vec(any_f64(), 1..200)
        ) {
            let s = Samples {
                timestamps: (0..values.len() as i64).collect(),
                values: values.clone(),
            };
            let summary = s.summary().unwrap();
            let mut sum = CompensatedSum::default();
            values.iter().for_each(|&v| sum.add(v));
            prop_assert_eq!(summary.count, values.len() as u64);
            prop_assert_eq!(summary.sum.value().to_bits(), sum.value().to_bits());
            prop_assert_eq!(summary.min, values.iter().copied().fold(f64::INFINITY, f64::min));
            prop_assert_eq!(summary.max, values.iter().copied().fold(f64::NEG_INFINITY, f64::max));
            prop_assert_eq!(summary.first, (0, values[0]));
            prop_assert_eq!(summary.last, (values.len() as i64 - 1, values[values.len() - 1]));
        }

        #[test]
        fn random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&body);
            // With a valid checksum, so that the blocks reach pcodec's decoder.
            let mut bytes = vec![FORMAT_V1];
            bytes.extend_from_slice(&body);
            let crc = crc32fast::hash(&bytes).to_le_bytes();
            bytes.extend_from_slice(&crc);
            let _ = decode(&bytes);
        }
    }
}
