//! Embeds the clinician dashboard (`dashboards/web/src/`) and the front-end libraries it uses
//! from npm (`dashboards/web/node_modules/`, installed here with `npm ci` from the committed
//! lockfile when missing) into the binary, so `vigil serve` serves the whole dashboard with
//! nothing beside it. No third-party front-end code is kept in the repository.
//!
//! Writes `$OUT_DIR/dashboard_assets.rs`: `ASSETS: &[(&str, &[u8])]`, paths relative to `/assets/`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Files taken from npm packages: (path under node_modules, served as).
const VENDOR: &[(&str, &str)] = &[
    ("uplot/dist/uPlot.esm.js", "vendor/uPlot.esm.js"),
    ("uplot/dist/uPlot.min.css", "vendor/uPlot.min.css"),
];

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets this"));
    let web = root.join("dashboards/web");
    let src = web.join("src");
    println!("cargo:rerun-if-changed=dashboards/web/src");
    println!("cargo:rerun-if-changed=dashboards/web/package-lock.json");
    println!("cargo:rerun-if-env-changed=VIGIL_SKIP_NPM");

    let mut files: Vec<(String, PathBuf)> = Vec::new();
    if src.is_dir() {
        collect(&src, &src, &mut files);
    }
    if web.join("package-lock.json").is_file() {
        let missing = VENDOR
            .iter()
            .any(|(from, _)| !web.join("node_modules").join(from).is_file());
        if missing && std::env::var_os("VIGIL_SKIP_NPM").is_none() {
            npm_ci(&web);
        }
        for (from, to) in VENDOR {
            let path = web.join("node_modules").join(from);
            if path.is_file() {
                println!("cargo:rerun-if-changed={}", path.display());
                files.push(((*to).to_owned(), path));
            } else {
                println!(
                    "cargo:warning=dashboard library {from} is missing (VIGIL_SKIP_NPM set?): charts will not load"
                );
            }
        }
    }
    files.sort();
    let mut out = String::from(
        "/// The dashboard's files, by path under `/assets/`.\npub(super) static ASSETS: &[(&str, &[u8])] = &[\n",
    );
    for (name, path) in &files {
        out.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets this"))
        .join("dashboard_assets.rs");
    std::fs::write(dest, out).expect("write dashboard_assets.rs");
}

fn collect(base: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(base, &path, out);
        } else if let Ok(rel) = path.strip_prefix(base) {
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push((rel, path));
        }
    }
}

fn npm_ci(web: &Path) {
    let status = Command::new("npm")
        .args([
            "ci",
            "--omit=dev",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ])
        .current_dir(web)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "`npm ci` in dashboards/web failed ({s}); the dashboard's chart library comes from \
             npm. Fix the npm error above, or build without it by setting VIGIL_SKIP_NPM=1"
        ),
        Err(e) => panic!(
            "the dashboard's chart library comes from npm, but npm could not be run ({e}). \
             Install Node.js 18 or newer with npm, or build without charts by setting \
             VIGIL_SKIP_NPM=1"
        ),
    }
}
