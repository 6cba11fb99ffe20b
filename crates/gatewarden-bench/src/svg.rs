//! Simple SVG line charts, written by hand: no plotting dependency for a few polylines.

use std::fmt::Write as _;

/// One line of a chart.
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A chart: axes (optionally logarithmic), lines, a legend.
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub lines: Vec<Line>,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Axis range and ticks for values, linear or log10.
struct Axis {
    log: bool,
    low: f64,
    high: f64,
    ticks: Vec<f64>,
}

impl Axis {
    fn new(values: impl Iterator<Item = f64>, log: bool) -> Self {
        let values: Vec<f64> = values
            .filter(|v| v.is_finite() && (!log || *v > 0.0))
            .collect();
        let (min, max) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(*v), hi.max(*v))
            });
        if !min.is_finite() {
            return Axis {
                log,
                low: if log { 1.0 } else { 0.0 },
                high: 10.0,
                ticks: vec![],
            };
        }
        if log {
            let low = 10f64.powf(min.log10().floor());
            let mut high = 10f64.powf(max.log10().ceil());
            if high <= low {
                high = low * 10.0;
            }
            let mut ticks = Vec::new();
            let mut tick = low;
            while tick <= high * 1.0001 {
                ticks.push(tick);
                tick *= 10.0;
            }
            Axis {
                log,
                low,
                high,
                ticks,
            }
        } else {
            let low = if min >= 0.0 { 0.0 } else { min };
            let span = (max - low).max(f64::EPSILON);
            let raw_step = span / 5.0;
            let magnitude = 10f64.powf(raw_step.log10().floor());
            let step = [1.0, 2.0, 2.5, 5.0, 10.0]
                .iter()
                .map(|m| m * magnitude)
                .find(|s| *s >= raw_step)
                .unwrap_or(raw_step);
            let high = (max / step).ceil() * step;
            let high = if high <= low { low + step } else { high };
            let ticks = (0..=((high - low) / step).round() as usize)
                .map(|i| low + i as f64 * step)
                .collect();
            Axis {
                log,
                low,
                high,
                ticks,
            }
        }
    }

    /// 0..1 position of `value` along the axis.
    fn fraction(&self, value: f64) -> f64 {
        if self.log {
            (value.max(self.low).log10() - self.low.log10())
                / (self.high.log10() - self.low.log10())
        } else {
            (value - self.low) / (self.high - self.low)
        }
    }
}

fn label(value: f64) -> String {
    if value == 0.0 {
        "0".into()
    } else if value.abs() >= 1000.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{}", (value * 100.0).round() / 100.0)
    } else {
        format!("{value:.3}").trim_end_matches('0').to_string()
    }
}

impl Chart {
    /// The chart as an SVG document.
    pub fn render(&self) -> String {
        let x_axis = Axis::new(
            self.lines.iter().flat_map(|l| l.points.iter().map(|p| p.0)),
            self.log_x,
        );
        let y_axis = Axis::new(
            self.lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)),
            self.log_y,
        );
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let sx = |x: f64| LEFT + x_axis.fraction(x) * plot_w;
        let sy = |y: f64| TOP + plot_h - y_axis.fraction(y) * plot_h;
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
            LEFT + plot_w / 2.0,
            escape(&self.title)
        );
        for &tick in &x_axis.ticks {
            let x = sx(tick);
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#e0e0e0"/>"##,
                TOP + plot_h
            );
            let _ = writeln!(
                svg,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                TOP + plot_h + 16.0,
                label(tick)
            );
        }
        for &tick in &y_axis.ticks {
            let y = sy(tick);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e0e0e0"/>"##,
                LEFT + plot_w
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                y + 4.0,
                label(tick)
            );
        }
        let _ = writeln!(
            svg,
            r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + plot_w / 2.0,
            HEIGHT - 18.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            svg,
            r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
            TOP + plot_h / 2.0,
            TOP + plot_h / 2.0,
            escape(&self.y_label)
        );
        for (index, line) in self.lines.iter().enumerate() {
            let color = COLORS[index % COLORS.len()];
            let points: Vec<(f64, f64)> = line
                .points
                .iter()
                .copied()
                .filter(|(x, y)| {
                    x.is_finite()
                        && y.is_finite()
                        && (!self.log_x || *x > 0.0)
                        && (!self.log_y || *y > 0.0)
                })
                .collect();
            let path: Vec<String> = points
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                path.join(" ")
            );
            for (x, y) in &points {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                    sx(*x),
                    sy(*y)
                );
            }
            let legend_y = TOP + 10.0 + index as f64 * 20.0;
            let legend_x = LEFT + plot_w + 14.0;
            let _ = writeln!(
                svg,
                r#"<line x1="{legend_x:.1}" y1="{legend_y:.1}" x2="{:.1}" y2="{legend_y:.1}" stroke="{color}" stroke-width="2"/>"#,
                legend_x + 20.0
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
                legend_x + 26.0,
                legend_y + 4.0,
                escape(&line.name)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_lines_and_survives_empty_and_non_finite_input() {
        let chart = Chart {
            title: "t <1>".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            log_x: true,
            log_y: true,
            lines: vec![
                Line {
                    name: "a".into(),
                    points: vec![(1.0, 0.1), (16.0, 2.0), (f64::NAN, 1.0)],
                },
                Line {
                    name: "empty".into(),
                    points: vec![],
                },
            ],
        };
        let svg = chart.render();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("t &lt;1&gt;"));
        assert!(svg.contains("<polyline"));
    }
}
