//! Small SVG charts, written by hand so that the report needs no plotting crate:
//! grouped bars and lines over a logarithmic x axis.

use std::fmt::Write as _;

const W: f64 = 640.0;
const H: f64 = 360.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 70.0;
const COLORS: [&str; 4] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn head(title: &str, y_label: &str) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
<text transform="translate(16,{}) rotate(-90)" text-anchor="middle">{}</text>
"#,
        W / 2.0,
        esc(title),
        (TOP + H - BOTTOM) / 2.0,
        esc(y_label)
    );
    s
}

/// A "nice" upper bound for an axis.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

fn y_axis(s: &mut String, max: f64) {
    let plot_h = H - TOP - BOTTOM;
    for i in 0..=5 {
        let v = max * f64::from(i) / 5.0;
        let y = H - BOTTOM - plot_h * f64::from(i) / 5.0;
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            fmt_num(v)
        );
    }
}

/// Compact numbers for axis labels.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    let short = |x: f64, decimals: usize, unit: &str| {
        let n = format!("{x:.decimals$}");
        let n = if n.contains('.') {
            n.trim_end_matches('0').trim_end_matches('.')
        } else {
            &n
        };
        format!("{n}{unit}")
    };
    if a >= 1e6 {
        short(v / 1e6, 3, "M")
    } else if a >= 1e3 {
        short(v / 1e3, 1, "k")
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn legend(s: &mut String, names: &[&str]) {
    for (i, n) in names.iter().enumerate() {
        let x = LEFT + 10.0 + 150.0 * i as f64;
        let y = H - 18.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{y}">{}</text>"#,
            y - 10.0,
            COLORS[i % COLORS.len()],
            x + 16.0,
            esc(n)
        );
    }
}

/// Grouped bars: one group per category, one bar per series.
pub fn bars(
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[(&str, Vec<f64>)],
) -> String {
    let mut s = head(title, y_label);
    let max = nice_max(
        series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .fold(0.0, f64::max),
    );
    y_axis(&mut s, max);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let group_w = plot_w / categories.len().max(1) as f64;
    let bar_w = group_w * 0.8 / series.len().max(1) as f64;
    for (ci, c) in categories.iter().enumerate() {
        let gx = LEFT + group_w * ci as f64 + group_w * 0.1;
        for (si, (_, vals)) in series.iter().enumerate() {
            let v = vals.get(ci).copied().unwrap_or(0.0);
            let h = (v / max).clamp(0.0, 1.0) * plot_h;
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}</title></rect>"#,
                gx + bar_w * si as f64,
                H - BOTTOM - h,
                bar_w * 0.95,
                h,
                COLORS[si % COLORS.len()],
                fmt_num(v)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            gx + group_w * 0.4,
            H - BOTTOM + 16.0,
            esc(c)
        );
    }
    let names: Vec<&str> = series.iter().map(|(n, _)| *n).collect();
    legend(&mut s, &names);
    s.push_str("</svg>\n");
    s
}

/// Lines over a logarithmic x axis (x > 0).
pub fn lines_logx(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> String {
    let mut s = head(title, y_label);
    let pts = || series.iter().flat_map(|(_, v)| v.iter().copied());
    let max = nice_max(pts().map(|p| p.1).fold(0.0, f64::max));
    let lx = |x: f64| x.max(1e-9).log10();
    let x0 = pts().map(|p| lx(p.0)).fold(f64::INFINITY, f64::min).floor();
    let x1 = pts()
        .map(|p| lx(p.0))
        .fold(f64::NEG_INFINITY, f64::max)
        .ceil();
    let (x0, x1) = if x1 > x0 { (x0, x1) } else { (x0, x0 + 1.0) };
    y_axis(&mut s, max);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let px = |x: f64| LEFT + (lx(x) - x0) / (x1 - x0) * plot_w;
    let py = |y: f64| H - BOTTOM - (y / max).clamp(0.0, 1.0) * plot_h;
    let mut d = x0;
    while d <= x1 + 1e-9 {
        let x = LEFT + (d - x0) / (x1 - x0) * plot_w;
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
            H - BOTTOM + 16.0,
            fmt_num(10f64.powf(d))
        );
        d += 1.0;
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        H - BOTTOM + 34.0,
        esc(x_label)
    );
    for (si, (_, v)) in series.iter().enumerate() {
        let color = COLORS[si % COLORS.len()];
        let path: Vec<String> = v
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for &(x, y) in v {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"><title>{}</title></circle>"#,
                px(x),
                py(y),
                fmt_num(y)
            );
        }
    }
    let names: Vec<&str> = series.iter().map(|(n, _)| *n).collect();
    legend(&mut s, &names);
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed_svg() {
        let b = bars(
            "t <1>",
            "y",
            &["a".into(), "b".into()],
            &[("s1", vec![1.0, 2.0]), ("s2", vec![3.0, 0.0])],
        );
        assert!(b.starts_with("<svg") && b.ends_with("</svg>\n"));
        assert_eq!(
            b.matches("<rect x=").count(),
            4 + 2,
            "4 bars and 2 legend keys"
        );
        assert!(b.contains("t &lt;1&gt;"));
        let l = lines_logx("t", "x", "y", &[("s", vec![(1e4, 1.0), (1e7, 2.0)])]);
        assert_eq!(l.matches("<circle").count(), 2);
        assert!(l.contains(">10k<") && l.contains(">10M<"));
    }

    #[test]
    fn axis_numbers() {
        assert_eq!(nice_max(7.3), 10.0);
        assert_eq!(nice_max(1.9e6), 2e6);
        assert_eq!(fmt_num(2_500_000.0), "2.5M");
        assert_eq!(fmt_num(20_000.0), "20k");
        assert_eq!(fmt_num(0.5), "0.50");
    }
}
