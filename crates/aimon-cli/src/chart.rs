//! A small terminal line chart drawn with braille characters (2×4 dots per cell).

use chrono::{DateTime, Utc};

const BRAILLE_BASE: u32 = 0x2800;

/// The bit of the dot at (`dx`, `dy`) inside one braille cell.
fn dot_bit(dx: usize, dy: usize) -> u8 {
    match (dx, dy) {
        (0, 3) => 0x40,
        (1, 3) => 0x80,
        (0, y) => 1 << y,
        (_, y) => 1 << (y + 3),
    }
}

/// A grid of `width × height` cells, i.e. `2·width × 4·height` dots.
struct Canvas {
    width: usize,
    height: usize,
    cells: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        Canvas {
            width,
            height,
            cells: vec![0; width * height],
        }
    }

    /// Sets the dot at pixel (`x`, `y`), `y = 0` being the top row; outside points are ignored.
    fn set(&mut self, x: usize, y: usize) {
        if x < self.width * 2 && y < self.height * 4 {
            self.cells[(y / 4) * self.width + x / 2] |= dot_bit(x % 2, y % 4);
        }
    }

    fn line(&mut self, (x0, y0): (usize, usize), (x1, y1): (usize, usize)) {
        let steps = x0.abs_diff(x1).max(y0.abs_diff(y1)).max(1);
        for i in 0..=steps {
            let t = i as f64 / steps as f64;
            let x = x0 as f64 + (x1 as f64 - x0 as f64) * t;
            let y = y0 as f64 + (y1 as f64 - y0 as f64) * t;
            self.set(x.round() as usize, y.round() as usize);
        }
    }

    fn rows(&self) -> Vec<String> {
        self.cells
            .chunks(self.width)
            .map(|row| {
                row.iter()
                    .map(|&bits| char::from_u32(BRAILLE_BASE + u32::from(bits)).unwrap_or(' '))
                    .collect()
            })
            .collect()
    }
}

/// The plot area alone: `height` rows of `width` braille cells tracing `values` left to right,
/// scaled between their minimum (bottom) and maximum (top). Non-finite values are skipped.
pub fn plot(values: &[f64], width: usize, height: usize) -> Vec<String> {
    let width = width.max(1);
    let height = height.max(1);
    let mut canvas = Canvas::new(width, height);
    let points: Vec<(usize, f64)> = values
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .collect();
    let Some((min, max)) = bounds(points.iter().map(|p| p.1)) else {
        return canvas.rows();
    };
    let (px_w, px_h) = (width * 2, height * 4);
    let n = values.len();
    let to_pixel = |(i, v): (usize, f64)| {
        let x = if n <= 1 {
            0
        } else {
            (i as f64 * (px_w - 1) as f64 / (n - 1) as f64).round() as usize
        };
        let frac = if max > min {
            (v - min) / (max - min)
        } else {
            0.5
        };
        let y = (px_h - 1) - (frac * (px_h - 1) as f64).round() as usize;
        (x, y)
    };
    let mut previous = None;
    for point in points {
        let pixel = to_pixel(point);
        match previous {
            Some(prev) => canvas.line(prev, pixel),
            None => canvas.set(pixel.0, pixel.1),
        }
        previous = Some(pixel);
    }
    canvas.rows()
}

fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// A short human form of a number for axis labels: `1.2M`, `12.3k`, `842`, `3.14`, `0.0123`.
pub fn compact(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a == 0.0 {
        "0".to_owned()
    } else {
        format!("{v:.4}")
    }
}

/// A titled chart of a time series with a y axis (min, middle, max) and the first and last
/// times under it.
pub fn render(title: &str, points: &[(DateTime<Utc>, f64)], width: usize, height: usize) -> String {
    let mut out = format!("{title}\n");
    if points.is_empty() {
        out.push_str("  (no data)\n");
        return out;
    }
    let values: Vec<f64> = points.iter().map(|p| p.1).collect();
    let (min, max) = bounds(values.iter().copied().filter(|v| v.is_finite())).unwrap_or((0.0, 0.0));
    let rows = plot(&values, width, height);
    let labels: Vec<String> = (0..rows.len())
        .map(|r| {
            if r == 0 {
                compact(max)
            } else if r == rows.len() - 1 {
                compact(min)
            } else if r == rows.len() / 2 {
                compact((min + max) / 2.0)
            } else {
                String::new()
            }
        })
        .collect();
    let label_width = labels.iter().map(String::len).max().unwrap_or(0);
    for (label, row) in labels.iter().zip(&rows) {
        let tick = if label.is_empty() { '│' } else { '┤' };
        out.push_str(&format!("{label:>label_width$} {tick}{row}\n"));
    }
    out.push_str(&format!(
        "{:>label_width$} └{}\n",
        "",
        "─".repeat(width.max(1))
    ));
    let first = points[0].0.format("%m-%d %H:%M").to_string();
    let last = points[points.len() - 1].0.format("%m-%d %H:%M").to_string();
    let gap = (width.max(1) + 1)
        .saturating_sub(first.len() + last.len())
        .max(1);
    out.push_str(&format!(
        "{:>label_width$}  {first}{}{last}\n",
        "",
        " ".repeat(gap)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dots(row: &str) -> Vec<u8> {
        row.chars()
            .map(|c| (c as u32 - BRAILLE_BASE) as u8)
            .collect()
    }

    #[test]
    fn plot_has_the_requested_size() {
        let rows = plot(&[1.0, 2.0, 3.0], 10, 4);
        assert_eq!(rows.len(), 4);
        assert!(rows.iter().all(|r| r.chars().count() == 10));
    }

    #[test]
    fn empty_and_non_finite_input_draws_nothing() {
        for values in [vec![], vec![f64::NAN, f64::INFINITY]] {
            let rows = plot(&values, 5, 2);
            assert!(rows.iter().all(|r| dots(r).iter().all(|&d| d == 0)));
        }
    }

    #[test]
    fn a_rising_series_goes_from_bottom_left_to_top_right() {
        let rows = plot(&[0.0, 1.0, 2.0, 3.0], 4, 2);
        let top = dots(&rows[0]);
        let bottom = dots(&rows[1]);
        // Bottom-left dot (0, 7) is in the bottom row's first cell, dot row 3, column 0.
        assert_ne!(bottom[0] & 0x40, 0);
        // Top-right dot (7, 0) is in the top row's last cell, dot row 0, column 1.
        assert_ne!(top[3] & 0x08, 0);
        assert_eq!(top[0], 0);
        assert_eq!(bottom[3], 0);
    }

    #[test]
    fn a_constant_series_is_a_flat_line_in_the_middle() {
        let rows = plot(&[5.0; 8], 4, 2);
        // 8 dot rows; the middle (3.5 from the bottom) rounds to dot row 3 from the top, the
        // lowest dots of the top cell row.
        assert!(dots(&rows[0]).iter().all(|&d| d == 0x40 | 0x80));
        assert!(dots(&rows[1]).iter().all(|&d| d == 0));
    }

    #[test]
    fn lines_are_continuous() {
        // A jump from bottom to top between two adjacent points fills the column between them.
        let rows = plot(&[0.0, 10.0], 1, 3);
        for row in &rows {
            assert_ne!(dots(row)[0], 0, "{rows:?}");
        }
    }

    #[test]
    fn render_labels_the_axes() {
        let t0 = DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
            .unwrap()
            .to_utc();
        let points: Vec<_> = (0..10)
            .map(|i| (t0 + chrono::TimeDelta::minutes(30 * i), i as f64 * 100.0))
            .collect();
        let text = render("latency", &points, 20, 5);
        assert!(text.starts_with("latency\n"));
        assert!(text.contains("900 ┤"));
        assert!(text.contains("0 ┤"));
        assert!(text.contains("05-01 12:00"));
        assert!(text.contains("05-01 16:30"));
        assert!(render("x", &[], 10, 3).contains("no data"));
    }

    #[test]
    fn compact_numbers() {
        assert_eq!(compact(1_234_567.0), "1.2M");
        assert_eq!(compact(12_345.0), "12.3k");
        assert_eq!(compact(842.4), "842");
        assert_eq!(compact(4.256), "4.26");
        assert_eq!(compact(0.01234), "0.0123");
        assert_eq!(compact(0.0), "0");
    }
}
