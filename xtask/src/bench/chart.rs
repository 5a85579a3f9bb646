//! The SVG charts of the report (plotters).

use super::WORKLOADS;
use anyhow::Result;
use std::path::Path;

/// A series of a chart: its name and `f` of every row.
pub(super) fn series<R>(name: &str, rows: &[R], f: impl Fn(&R) -> f64) -> (String, Vec<f64>) {
    (name.to_string(), rows.iter().map(f).collect())
}

/// One series per workload (named after it): `f` of the row that `find`
/// returns for each category and the workload, NaN where there is none.
pub(super) fn per_workload<'a, C, R: 'a>(
    categories: &[C],
    find: impl Fn(&C, &str) -> Option<&'a R>,
    f: impl Fn(&R) -> f64,
) -> Vec<(String, Vec<f64>)> {
    WORKLOADS
        .iter()
        .map(|wl| {
            let vals = categories
                .iter()
                .map(|c| find(c, wl).map_or(f64::NAN, &f))
                .collect();
            (wl.to_string(), vals)
        })
        .collect()
}

/// A plotters error as an anyhow error, in its `Debug` form.
fn plotting<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("{e:?}")
}

/// A grouped bar chart: one group per category, one bar per series, an
/// optional dashed reference line.
pub(super) fn bar_chart(
    path: &Path,
    title: &str,
    y_desc: &str,
    cats: &[String],
    series: &[(String, Vec<f64>)],
    reference: Option<(f64, &str)>,
) -> Result<()> {
    use plotters::prelude::*;
    use plotters::series::DashedLineSeries;
    let finite = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .filter(|v| v.is_finite());
    let top = finite.fold(reference.map_or(0.0, |r| r.0), f64::max) * 1.7;
    let top = if top > 0.0 { top } else { 1.0 };
    let root = SVGBackend::new(path, (760, 380)).into_drawing_area();
    root.fill(&WHITE).map_err(plotting)?;
    let n = cats.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(0f64..n as f64, 0f64..top)
        .map_err(plotting)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.01 && i < cats.len() {
                cats[i].clone()
            } else {
                String::new()
            }
        })
        .y_desc(y_desc)
        .draw()
        .map_err(plotting)?;
    let palette = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xd6, 0x27, 0x28),
    ];
    let k = series.len().max(1) as f64;
    let width = 0.8 / k;
    for (si, (name, vals)) in series.iter().enumerate() {
        let color = palette[si % palette.len()];
        // The bars that have a value, at the left edge of their slot in the
        // category's group.
        let placed = || {
            vals.iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(move |(i, &v)| (i as f64 + 0.1 + width * si as f64, v))
        };
        let bars = placed()
            .map(|(x0, v)| Rectangle::new([(x0, 0.0), (x0 + width * 0.95, v)], color.filled()));
        chart
            .draw_series(bars)
            .map_err(plotting)?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        let labels = placed().map(|(x, v)| {
            Text::new(
                format!("{v:.2}"),
                (x, v + top * 0.05),
                ("sans-serif", 11).into_font(),
            )
        });
        chart.draw_series(labels).map_err(plotting)?;
    }
    if let Some((y, label)) = reference {
        let style = ShapeStyle::from(&BLACK).stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, y), (n as f64, y)],
                6,
                4,
                style,
            ))
            .map_err(plotting)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(plotting)?;
    root.present().map_err(plotting)?;
    Ok(())
}

/// A line chart: one line per series of `(x, y)` points (the churn scenario's
/// curves over cycles). The y axis starts at `y_from` (RSS curves sit far
/// from 0; a 0-based axis would flatten the growth the chart is about).
pub(super) fn line_chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    use plotters::prelude::*;
    let pts = || series.iter().flat_map(|s| s.1.iter().copied());
    let x_max = pts().map(|p| p.0).fold(1.0, f64::max);
    let (lo, hi) = pts()
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo > hi { (0.0, 1.0) } else { (lo, hi) };
    // Room above and below, at least 256 KiB in all: a flat line stays flat.
    let pad = ((hi - lo) * 0.15).max(128.0);
    let root = SVGBackend::new(path, (760, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(plotting)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max, (lo - pad).max(0.0)..hi + pad)
        .map_err(plotting)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE.mix(0.0))
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(plotting)?;
    let palette = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xd6, 0x27, 0x28),
    ];
    for (si, (name, points)) in series.iter().enumerate() {
        let color = palette[si % palette.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(plotting)?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 12, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(plotting)?;
    root.present().map_err(plotting)?;
    Ok(())
}
