//! The HTML report: one self-contained file, with an inline SVG distribution plot per column
//! (reference against current) and no scripts, fonts or other external assets.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use super::stats::ColumnKind;
use super::{ColumnMetrics, Summary, WindowMetrics};

/// The report's file name inside `--report DIR`.
pub const REPORT_FILE: &str = "report.html";
/// The JSON summary's file name inside `--report DIR`.
pub const SUMMARY_FILE: &str = "summary.json";

const REF_COLOR: &str = "#4c78a8";
const CUR_COLOR: &str = "#f58518";
const BINS: usize = 40;
const TOP_CATEGORIES: usize = 30;
// Plot geometry, in SVG user units.
const W: f64 = 760.0;
const H: f64 = 230.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 34.0;

/// Writes `report.html` and `summary.json` into `dir`.
pub fn write(
    dir: &Path,
    summary: &Summary,
    samples: &[(String, ColumnKind, Vec<f64>, Vec<f64>)],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("create report folder {}", dir.display()))?;
    let path = dir.join(REPORT_FILE);
    std::fs::write(&path, render(summary, samples))
        .with_context(|| format!("write {}", path.display()))?;
    write_summary(dir, summary)
}

/// Writes `summary.json` into `dir`.
pub fn write_summary(dir: &Path, summary: &Summary) -> anyhow::Result<()> {
    let path = dir.join(SUMMARY_FILE);
    std::fs::write(&path, serde_json::to_vec_pretty(summary)?)
        .with_context(|| format!("write {}", path.display()))
}

/// Escapes text for HTML and SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

fn num(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e5) {
        format!("{x:.3e}")
    } else {
        format!("{x:.4}")
    }
}

/// Renders the whole report.
pub fn render(summary: &Summary, samples: &[(String, ColumnKind, Vec<f64>, Vec<f64>)]) -> String {
    let mut h = String::new();
    let o = &summary.overall;
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Drift report: {}</title>\n<style>{}</style></head><body>\n",
        esc(&summary.current.path),
        STYLE
    );
    let _ = writeln!(h, "<h1>Data and prediction drift</h1>");
    let _ = writeln!(
        h,
        "<p class=\"{}\">{}</p>",
        if summary.alert { "alert" } else { "fine" },
        if summary.alert {
            "An alert fired (exit code 3)."
        } else {
            "No alert fired."
        }
    );
    let _ = writeln!(h, "<table class=\"meta\">");
    let row = |h: &mut String, k: &str, v: String| {
        let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), v);
    };
    row(&mut h, "environment", esc(&summary.env));
    row(
        &mut h,
        "reference",
        format!(
            "{} ({} trips)",
            esc(&summary.reference.path),
            summary.reference.rows
        ),
    );
    row(
        &mut h,
        "current",
        format!(
            "{} ({} trips, {} outside the time range or without pickup time)",
            esc(&summary.current.path),
            summary.current.rows,
            summary.current_rows_excluded
        ),
    );
    row(
        &mut h,
        "period",
        format!("{} .. {} ({} trips)", esc(&o.start), esc(&o.end), o.rows),
    );
    if let Some(v) = &summary.model_version {
        row(&mut h, "model", esc(v));
    }
    let t = &summary.thresholds;
    row(
        &mut h,
        "thresholds",
        format!(
            "dataset drift at ≥ {} of columns drifted; missing values alert above {}; prediction: {}",
            pct(t.drift_share),
            pct(t.max_missing_share),
            t.prediction_threshold
                .map_or("the test's default".to_string(), num)
        ),
    );
    let _ = writeln!(h, "</table>");

    let _ = writeln!(
        h,
        "<h2>Whole period</h2>\n<p>{} of {} columns drifted ({}): dataset drift <b>{}</b>. Missing values: {}.</p>",
        o.columns_drifted,
        o.columns_tested,
        pct(o.share_drifted_columns),
        if o.dataset_drift {
            "detected"
        } else {
            "not detected"
        },
        pct(o.missing_share)
    );
    column_table(&mut h, o);

    if !summary.windows.is_empty() || !summary.skipped_windows.is_empty() {
        window_table(&mut h, summary);
    }

    let _ = writeln!(
        h,
        "<h2>Distributions</h2>\n<p class=\"legend\"><span style=\"background:{REF_COLOR}\"></span>reference <span style=\"background:{CUR_COLOR}\"></span>current (shares of each side's values)</p>"
    );
    for (name, kind, reference, current) in samples {
        let metrics = o
            .columns
            .iter()
            .chain(&o.prediction)
            .find(|c| &c.column == name);
        let verdict = metrics
            .and_then(|m| m.drift)
            .map(|d| {
                format!(
                    "{}: {} (threshold {}) — {}",
                    d.test.display_name(),
                    num(d.score),
                    num(d.threshold),
                    if d.drifted { "drift" } else { "no drift" }
                )
            })
            .unwrap_or_else(|| "not tested".into());
        let _ = writeln!(h, "<section><h3>{}</h3><p>{}</p>", esc(name), esc(&verdict));
        let svg = match kind {
            ColumnKind::Numerical
                if super::stats::n_unique(reference, current) > super::stats::FEW_VALUES_MAX =>
            {
                histogram_svg(name, reference, current)
            }
            _ => bars_svg(name, reference, current),
        };
        let _ = writeln!(h, "{svg}</section>");
    }
    let _ = writeln!(
        h,
        "<footer>cargo xtask monitor · tests as Evidently's defaults · {} samples</footer></body></html>",
        samples.len()
    );
    h
}

fn column_table(h: &mut String, w: &WindowMetrics) {
    let _ = writeln!(
        h,
        "<table><tr><th>column</th><th>type</th><th>test</th><th>score</th><th>threshold</th><th>drift</th><th>missing (current)</th><th>missing (reference)</th><th>mean (reference)</th><th>mean (current)</th></tr>"
    );
    for c in w.columns.iter().chain(&w.prediction) {
        column_row(h, c);
    }
    let _ = writeln!(h, "</table>");
}

fn column_row(h: &mut String, c: &ColumnMetrics) {
    let kind = match c.kind {
        ColumnKind::Numerical => "numerical",
        ColumnKind::Categorical => "categorical",
    };
    let (test, score, threshold, drift) = match c.drift {
        Some(d) => (
            d.test.display_name().to_string(),
            num(d.score),
            num(d.threshold),
            if d.drifted { "DRIFT" } else { "no" },
        ),
        None => ("not tested".into(), "–".into(), "–".into(), "–"),
    };
    let _ = writeln!(
        h,
        "<tr class=\"{}\"><td>{}</td><td>{kind}</td><td>{}</td><td>{score}</td><td>{threshold}</td><td>{drift}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        if c.drifted() { "drift" } else { "" },
        esc(&c.column),
        esc(&test),
        pct(c.missing_share),
        pct(c.reference_missing_share),
        num(c.reference_mean),
        num(c.current_mean)
    );
}

fn window_table(h: &mut String, s: &Summary) {
    let _ = writeln!(
        h,
        "<h2>Windows</h2>\n<table><tr><th>start</th><th>end</th><th>trips</th><th>drifted columns</th><th>dataset drift</th><th>missing</th><th>prediction score</th><th>alerts</th></tr>"
    );
    for w in &s.windows {
        let pred = w
            .prediction
            .as_ref()
            .and_then(|p| p.drift)
            .map_or("–".to_string(), |d| num(d.score));
        let alerts: Vec<&str> = w.alerts.iter().map(|a| a.name()).collect();
        let _ = writeln!(
            h,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if alerts.is_empty() { "" } else { "drift" },
            esc(&w.start),
            esc(&w.end),
            w.rows,
            w.columns_drifted,
            w.columns_tested,
            if w.dataset_drift { "yes" } else { "no" },
            pct(w.missing_share),
            pred,
            alerts.join(", ")
        );
    }
    let _ = writeln!(h, "</table>");
    if !s.skipped_windows.is_empty() {
        let list: Vec<String> = s
            .skipped_windows
            .iter()
            .map(|w| format!("{} ({} trips)", esc(&w.start), w.rows))
            .collect();
        let _ = writeln!(h, "<p>Skipped, too few trips: {}</p>", list.join(", "));
    }
}

/// Quantile of sorted values (linear interpolation).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Overlaid histograms of a numerical column over the central 99% of both samples' values.
fn histogram_svg(name: &str, reference: &[f64], current: &[f64]) -> String {
    let mut all: Vec<f64> = reference.iter().chain(current).copied().collect();
    if all.is_empty() {
        return "<p>no values</p>".into();
    }
    all.sort_by(f64::total_cmp);
    let (mut lo, mut hi) = (quantile(&all, 0.005), quantile(&all, 0.995));
    if hi <= lo {
        (lo, hi) = (lo - 0.5, hi + 0.5);
    }
    let width = (hi - lo) / BINS as f64;
    let shares = |v: &[f64]| -> (Vec<f64>, usize) {
        let mut counts = vec![0usize; BINS];
        let mut outside = 0;
        for &x in v {
            if x < lo || x > hi {
                outside += 1;
            } else {
                counts[(((x - lo) / width) as usize).min(BINS - 1)] += 1;
            }
        }
        let n = v.len().max(1) as f64;
        (counts.into_iter().map(|c| c as f64 / n).collect(), outside)
    };
    let ((rs, ro), (cs, co)) = (shares(reference), shares(current));
    let ymax = rs.iter().chain(&cs).copied().fold(0.0, f64::max).max(1e-12);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let mut s = svg_open(name, ymax);
    for (series, color) in [(&rs, REF_COLOR), (&cs, CUR_COLOR)] {
        for (i, v) in series.iter().enumerate() {
            let bh = v / ymax * ph;
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\" fill-opacity=\"0.55\"/>",
                LEFT + i as f64 * pw / BINS as f64,
                TOP + ph - bh,
                pw / BINS as f64,
                bh
            );
        }
    }
    for (x, label) in [
        (LEFT, num(lo)),
        (LEFT + pw / 2.0, num((lo + hi) / 2.0)),
        (LEFT + pw, num(hi)),
    ] {
        let _ = write!(
            s,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            H - 18.0,
            esc(&label)
        );
    }
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">outside the range: reference {}, current {}</text></svg>",
        W - RIGHT,
        H - 3.0,
        ro,
        co
    );
    s
}

/// Paired bars of the most frequent values of a categorical column (or a numerical one with few
/// values).
fn bars_svg(name: &str, reference: &[f64], current: &[f64]) -> String {
    use std::collections::BTreeMap;
    let mut counts: BTreeMap<i64, (f64, f64)> = BTreeMap::new();
    let key = |x: f64| (x * 1000.0).round() as i64;
    for &x in reference {
        counts.entry(key(x)).or_default().0 += 1.0 / reference.len().max(1) as f64;
    }
    for &x in current {
        counts.entry(key(x)).or_default().1 += 1.0 / current.len().max(1) as f64;
    }
    if counts.is_empty() {
        return "<p>no values</p>".into();
    }
    let mut top: Vec<(i64, (f64, f64))> = counts.into_iter().collect();
    let total = top.len();
    top.sort_by(|a, b| b.1.0.max(b.1.1).total_cmp(&a.1.0.max(a.1.1)));
    top.truncate(TOP_CATEGORIES);
    top.sort_by_key(|(k, _)| *k);
    let ymax = top
        .iter()
        .map(|(_, (r, c))| r.max(*c))
        .fold(0.0, f64::max)
        .max(1e-12);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let slot = pw / top.len() as f64;
    let mut s = svg_open(name, ymax);
    for (i, (k, (r, c))) in top.iter().enumerate() {
        let x0 = LEFT + i as f64 * slot;
        for (j, (v, color)) in [(r, REF_COLOR), (c, CUR_COLOR)].into_iter().enumerate() {
            let bh = v / ymax * ph;
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"/>",
                x0 + slot * (0.1 + 0.4 * j as f64),
                TOP + ph - bh,
                slot * 0.4,
                bh
            );
        }
        let label = if k % 1000 == 0 {
            (k / 1000).to_string()
        } else {
            format!("{}", *k as f64 / 1000.0)
        };
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            x0 + slot / 2.0,
            H - 18.0,
            esc(&label)
        );
    }
    let note = if total > top.len() {
        format!("the {} most frequent of {} values", top.len(), total)
    } else {
        format!("{total} values")
    };
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text></svg>",
        W - RIGHT,
        H - 3.0,
        esc(&note)
    );
    s
}

fn svg_open(name: &str, ymax: f64) -> String {
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"distribution of {}\" font-family=\"sans-serif\" font-size=\"11\">",
        esc(name)
    );
    let _ = write!(
        s,
        "<line x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\"/><line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{:.1}\" stroke=\"#333\"/>",
        TOP + ph,
        LEFT + pw,
        TOP + ph,
        TOP + ph
    );
    for frac in [0.0, 0.5, 1.0] {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 4.0,
            TOP + ph - frac * ph + 4.0,
            pct(frac * ymax)
        );
    }
    s
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:60em;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.9em}\
tr.drift td{background:#fde2d2}.alert{background:#c0392b;color:#fff;padding:.5em}.fine{background:#2e7d32;color:#fff;padding:.5em}\
.legend span{display:inline-block;width:1em;height:1em;margin:0 .3em 0 1em;vertical-align:middle}\
section{margin:1.5em 0}footer{color:#777;font-size:.8em;margin-top:3em}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn histogram_draws_a_bar_per_bin_and_side() {
        let r: Vec<f64> = (0..1000).map(f64::from).collect();
        let c: Vec<f64> = (500..1500).map(f64::from).collect();
        let svg = histogram_svg("x", &r, &c);
        assert_eq!(svg.matches("<rect").count(), 2 * BINS);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }

    #[test]
    fn bars_keep_the_most_frequent_categories() {
        let r: Vec<f64> = (0..5000).map(|i| f64::from(i % 100)).collect();
        let svg = bars_svg("zone", &r, &r);
        assert_eq!(svg.matches("<rect").count(), 2 * TOP_CATEGORIES);
        assert!(svg.contains("30 most frequent of 100 values"));
    }
}
