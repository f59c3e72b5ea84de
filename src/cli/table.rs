//! The printed text's shared pieces: endpoint status labels and left-aligned columns.

use std::fmt::Write as _;

use podkeeper::model::record::EndpointStatus;

/// How a status is printed: UP or DRAINING.
pub fn status(status: EndpointStatus) -> &'static str {
    match status {
        EndpointStatus::Up => "UP",
        EndpointStatus::Draining => "DRAINING",
    }
}

/// Left-aligned columns, two spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, w) in cells.zip(&widths) {
            let _ = write!(text, "{cell:<w$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}
