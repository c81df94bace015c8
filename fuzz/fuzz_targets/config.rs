//! Fuzz the config loader and the compiled form the daemon reads on
//! startup and reload. Any UTF-8 text as the main file must give Ok or Err
//! with diagnostics, never a panic, and every diagnostic must render. A
//! config that loads must survive the trip through the compiled encoding
//! (what `coffeyd __compile` writes to the daemon): it decodes, with every
//! service's name, argv and policy intact; otherwise validate would pass a
//! config the daemon then refuses. Arbitrary bytes read as a compiled
//! config (a truncated pipe, an older binary) decode or give `Corrupt`.
#![no_main]

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unused_imports, clippy::all)]
#[path = "../../src/config/mod.rs"]
mod config;

#[allow(dead_code, unused_imports, clippy::all)]
#[path = "../../src/daemon/compiled.rs"]
mod compiled;
// `Limits::is_set` is the cgroup code's, which the target leaves out.
#[allow(dead_code)]
#[path = "../../src/daemon/resources.rs"]
mod resources;

fn round_trip(cfg: &config::Config) {
    let buf = compiled::encode(cfg);
    let Ok(compiled::Compiled::Valid {
        shutdown_timeout,
        count,
        services,
        fds,
    }) = compiled::decode(&buf)
    else {
        panic!("a config that loads does not decode from its compiled form");
    };
    assert_eq!(shutdown_timeout, cfg.shutdown_timeout);
    let names: Vec<&str> = compiled::fd_specs(fds).map(|e| e.name).collect();
    let want: Vec<&str> = cfg.fds.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, want, "fds table");
    assert_eq!(usize::from(count), cfg.services.len(), "service count");
    let mut n = 0;
    for (spec, c) in cfg
        .services
        .iter()
        .zip(compiled::services(&services, count))
    {
        n += 1;
        assert_eq!(c.name, spec.name, "name");
        assert_eq!(
            c.binary,
            spec.binary.as_os_str().as_bytes(),
            "binary of {}",
            spec.name
        );
        assert_eq!(
            c.args.count_left(),
            spec.args.len(),
            "args of {}",
            spec.name
        );
        for (a, b) in c.args.clone().zip(spec.args.iter()) {
            assert_eq!(a, b.as_bytes(), "an arg of {}", spec.name);
        }
        assert_eq!(c.policy, compiled::policy(spec), "policy of {}", spec.name);
        assert_eq!(
            usize::from(c.ndeps),
            spec.depends_on.len(),
            "deps of {}",
            spec.name
        );
        let to = spec.log.to.as_deref().unwrap_or("");
        assert_eq!(c.log_to, to.as_bytes(), "log.to of {}", spec.name);
    }
    assert_eq!(n, cfg.services.len(), "services decoded");
    let g = compiled::globals(&buf).expect("the globals of a config that loads decode");
    assert_eq!(g.limit_services, cfg.limits.services, "limits.services");
    assert_eq!(g.mounts().count(), cfg.mounts.len(), "mounts decoded");
}

fuzz_target!(|data: &[u8]| {
    let _ = compiled::globals(data).map(|g| g.mounts().count());
    let _ = compiled::decode(data).map(|c| {
        if let compiled::Compiled::Valid {
            count, services, ..
        } = c
        {
            compiled::services(&services, count).count()
        } else {
            0
        }
    });
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::load_str(Path::new("/fuzz/config.yaml"), text) {
        Ok((cfg, warnings)) => {
            for w in &warnings {
                let _ = w.to_string();
            }
            round_trip(&cfg);
        }
        Err(diags) => {
            assert!(!diags.is_empty(), "Err without diagnostics");
            for d in &diags {
                let _ = d.to_string();
            }
        }
    }
});
