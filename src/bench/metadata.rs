//! The [`Metadata`] of a report made in this process: git revision, build flags, versions, time.

use super::Metadata;

/// Metadata of this process for a report.
pub fn metadata(name: &str, manifest: &str, target: &str, device: &str, dtype: &str) -> Metadata {
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Metadata {
        name: name.into(),
        manifest: manifest.into(),
        target: target.into(),
        git_revision: crate::record::git_revision(),
        device: device.into(),
        dtype: dtype.into(),
        build_flags: crate::experiment::build_features()
            .into_iter()
            .map(String::from)
            .collect(),
        versions: [("caramba".to_string(), env!("CARGO_PKG_VERSION").to_string())]
            .into_iter()
            .collect(),
        created_at: rfc3339(created),
    }
}

/// UTC `YYYY-MM-DDTHH:MM:SSZ` of a Unix time (Howard Hinnant's civil-from-days).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
