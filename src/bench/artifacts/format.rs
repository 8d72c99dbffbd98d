//! Number formatting shared by the LaTeX table, the HTML page and the figures.

/// `x` with `decimals` decimals and its integer part grouped by thousands with commas (`32,768.5`).
pub(crate) fn grouped(x: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, x.abs());
    let (int, frac) = text
        .split_once('.')
        .map_or((text.as_str(), None), |(i, f)| (i, Some(f)));
    let mut out = String::new();
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if let Some(frac) = frac {
        out.push('.');
        out.push_str(frac);
    }
    if x.is_sign_negative() && text.chars().any(|c| c.is_ascii_digit() && c != '0') {
        out.insert(0, '-');
    }
    out
}

/// A perplexity: two decimals (`8.42`, `1,204.10`).
pub(crate) fn perplexity(x: f64) -> String {
    grouped(x, 2)
}

/// A throughput in tokens/s: one decimal below 100, none above (`42.7`, `1,234`).
pub(crate) fn throughput(x: f64) -> String {
    grouped(x, if x.abs() < 100.0 { 1 } else { 0 })
}

/// A byte count per token: an integer when it is one, else one decimal (`32,768`, `442.5`).
pub(crate) fn bytes(x: f64) -> String {
    grouped(x, if x.fract() == 0.0 { 0 } else { 1 })
}

/// A ratio: two decimals, without the multiplication sign (`1.50`).
pub(crate) fn ratio(x: f64) -> String {
    format!("{x:.2}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(grouped(32768.0, 0), "32,768");
        assert_eq!(grouped(1234567.891, 2), "1,234,567.89");
        assert_eq!(grouped(-1234.5, 1), "-1,234.5");
        assert_eq!(grouped(999.0, 0), "999");
        assert_eq!(grouped(-0.001, 1), "0.0");
        assert_eq!(throughput(42.66), "42.7");
        assert_eq!(throughput(1234.4), "1,234");
        assert_eq!(bytes(442.5), "442.5");
        assert_eq!(bytes(17408.0), "17,408");
    }
}
