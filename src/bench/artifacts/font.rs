//! The font of the PNG figures: a TrueType/OpenType file found on this system at run time (no font is
//! committed to the repository), registered once per process with plotters' `ab_glyph` support.
//!
//! Search order: `$CARAMBA_FONT`; well-known sans-serif files of Debian/Ubuntu (`fonts-dejavu-core`,
//! `fonts-liberation`, `fonts-noto-core`, `fonts-freefont-ttf`), Fedora, Arch, macOS and Windows; then any
//! `*Sans*.ttf`/`.otf` (not mono/bold/italic) under the usual font folders. When none is found the figures
//! are written as SVG, whose text the viewer renders with its own fonts.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::style::{FontStyle, register_font};

/// The family name the figures ask plotters for; the found font is registered under it.
pub(crate) const FAMILY: &str = "sans-serif";

/// Environment variable that names a font file to use instead of searching.
pub(crate) const FONT_ENV: &str = "CARAMBA_FONT";

const KNOWN: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
    "C:\\Windows\\Fonts\\segoeui.ttf",
];

const FOLDERS: &[&str] = &[
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "/System/Library/Fonts",
    "/Library/Fonts",
];

/// Outcome of the one search of this process: the registered font file, or the places searched.
static FONT: OnceLock<Result<PathBuf, Vec<String>>> = OnceLock::new();

/// The font file registered for the figures, searching and registering it on first use;
/// `Err` lists the places searched when no usable font exists.
pub(crate) fn figure_font() -> Result<&'static Path, &'static [String]> {
    match FONT.get_or_init(search_and_register) {
        Ok(path) => Ok(path.as_path()),
        Err(searched) => Err(searched.as_slice()),
    }
}

fn search_and_register() -> Result<PathBuf, Vec<String>> {
    let env = std::env::var_os(FONT_ENV).map(PathBuf::from);
    let mut folders: Vec<PathBuf> = FOLDERS.iter().map(PathBuf::from).collect();
    if let Some(home) = std::env::var_os("HOME") {
        folders.push(Path::new(&home).join(".local/share/fonts"));
        folders.push(Path::new(&home).join(".fonts"));
    }
    find_and_register(env, KNOWN, &folders)
}

/// Registers the first usable font among `env`, the `known` files, then the sans-serif files under `folders`
/// (sorted per folder); `Err` lists what was searched.
fn find_and_register(
    env: Option<PathBuf>,
    known: &[&str],
    folders: &[PathBuf],
) -> Result<PathBuf, Vec<String>> {
    let mut searched = Vec::new();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path) = env {
        searched.push(format!("${FONT_ENV}={}", path.display()));
        candidates.push(path);
    }
    candidates.extend(known.iter().map(PathBuf::from));
    if !known.is_empty() {
        searched.push(format!("{} well-known font files", known.len()));
    }
    for folder in folders {
        let mut found = Vec::new();
        scan(folder, 4, &mut found);
        found.sort();
        candidates.extend(found);
        searched.push(folder.display().to_string());
    }
    candidates
        .into_iter()
        .find(|path| try_register(path))
        .ok_or(searched)
}

/// Collects plain sans-serif `.ttf`/`.otf` files under `dir`, at most `depth` folders deep.
fn scan(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if depth > 0 {
                scan(&path, depth - 1, found);
            }
            continue;
        }
        let name = entry.file_name().to_string_lossy().to_ascii_lowercase();
        let font_file = name.ends_with(".ttf") || name.ends_with(".otf");
        let styled = ["mono", "bold", "italic", "oblique", "light", "condensed"]
            .iter()
            .any(|s| name.contains(s));
        if font_file && name.contains("sans") && !styled {
            found.push(path);
        }
    }
}

/// Registers `path` as [`FAMILY`] when it is a readable TrueType/OpenType file.
fn try_register(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    // why: check the sfnt signature first, so that a non-font file is never leaked below.
    let signature = bytes.get(..4);
    let sfnt = [&[0u8, 1, 0, 0][..], b"true", b"OTTO"]
        .iter()
        .any(|s| signature == Some(*s));
    if !sfnt {
        return false;
    }
    // why: plotters keeps registered fonts for the life of the process and needs `'static` bytes;
    // this runs at most once per candidate per process (under the OnceLock above).
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font(FAMILY, FontStyle::Normal, bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_without_fonts_reports_where_it_looked() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A file named like a font that is not one must be skipped, not registered.
        std::fs::write(dir.path().join("FakeSans.ttf"), b"not a font at all").expect("write");
        let bogus = dir.path().join("nope.ttf");
        let result = find_and_register(Some(bogus.clone()), &[], &[dir.path().to_path_buf()]);
        let searched = result.expect_err("no usable font");
        assert_eq!(searched[0], format!("${FONT_ENV}={}", bogus.display()));
        assert_eq!(searched[1], dir.path().display().to_string());
    }

    #[test]
    fn a_nested_sans_font_is_found() {
        let system = Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf");
        if !system.is_file() {
            println!("skipped: {} is absent, no real font to copy", system.display());
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let nested = dir.path().join("a/b");
        std::fs::create_dir_all(&nested).expect("mkdir");
        std::fs::copy(system, nested.join("DejaVuSans.ttf")).expect("copy");
        std::fs::copy(system, nested.join("DejaVuSans-Bold.ttf")).expect("copy");
        let found = find_and_register(None, &[], &[dir.path().to_path_buf()]).expect("found");
        assert_eq!(found, nested.join("DejaVuSans.ttf"));
    }
}
