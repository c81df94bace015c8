//! Fuzz the config loader: any UTF-8 text as the main file must give Ok or
//! Err with diagnostics, never a panic, and every diagnostic must render.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unused_imports, clippy::all)]
#[path = "../../src/config/mod.rs"]
mod config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::load_str(Path::new("/fuzz/config.yaml"), text) {
        Ok((_config, warnings)) => {
            for w in &warnings {
                let _ = w.to_string();
            }
        }
        Err(diags) => {
            assert!(!diags.is_empty(), "Err without diagnostics");
            for d in &diags {
                let _ = d.to_string();
            }
        }
    }
});
