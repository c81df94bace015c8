//! Which control socket the client talks to.
//!
//! Order: `-s PATH`; else the `socket` of the config named by `-c`, or of
//! the default config file when it exists; else the built-in default, the
//! same rule the config loader uses (root: `/run/coffey.sock`; others:
//! `$XDG_RUNTIME_DIR/coffey.sock`, or `/tmp/coffey-UID.sock` when that is
//! unset or empty). The decision is a pure function of [`Env`] so it can be
//! tested without touching /etc.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::Failure;
use crate::config;

/// What the resolution depends on besides the flags.
pub struct Env {
    pub euid: u32,
    pub xdg_runtime_dir: Option<OsString>,
    /// The config file read when `-c` is not given.
    pub default_config: PathBuf,
}

impl Env {
    pub fn current() -> Env {
        Env {
            euid: nix::unistd::geteuid().as_raw(),
            xdg_runtime_dir: std::env::var_os("XDG_RUNTIME_DIR"),
            default_config: PathBuf::from(super::args::DEFAULT_CONFIG),
        }
    }
}

/// Loads a config and returns its socket, or the diagnostics as text lines.
pub type Loader<'a> = &'a dyn Fn(&Path) -> Result<PathBuf, Vec<String>>;

/// The real loader: the full config loader, as the daemon would read it.
pub fn load_socket(path: &Path) -> Result<PathBuf, Vec<String>> {
    match config::load(path) {
        Ok((cfg, _warnings)) => Ok(cfg.socket),
        Err(diags) => Err(diags.iter().map(|d| d.to_string()).collect()),
    }
}

/// The socket when no config says otherwise.
pub fn builtin_default(env: &Env) -> PathBuf {
    if env.euid == 0 {
        return PathBuf::from("/run/coffey.sock");
    }
    match &env.xdg_runtime_dir {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("coffey.sock"),
        _ => PathBuf::from(format!("/tmp/coffey-{}.sock", env.euid)),
    }
}

/// Resolves the socket path. Fails only when an explicit `-c` config does
/// not load (exit 1, with its diagnostics).
pub fn resolve(
    socket: Option<&Path>,
    config: Option<&Path>,
    env: &Env,
    load: Loader<'_>,
) -> Result<PathBuf, Failure> {
    if let Some(s) = socket {
        return Ok(s.to_path_buf());
    }
    if let Some(c) = config {
        return load(c).map_err(|diags| {
            let mut msg = diags.join("\n");
            if !msg.is_empty() {
                msg.push('\n');
            }
            msg.push_str(&format!(
                "coffeyd: {}: cannot read the socket path from this config",
                c.display()
            ));
            Failure::failed(msg).plain()
        });
    }
    if env.default_config.exists() {
        if let Ok(s) = load(&env.default_config) {
            return Ok(s);
        }
    }
    Ok(builtin_default(env))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(euid: u32, xdg: Option<&str>, default_config: &Path) -> Env {
        Env {
            euid,
            xdg_runtime_dir: xdg.map(OsString::from),
            default_config: default_config.to_path_buf(),
        }
    }

    fn never(_: &Path) -> Result<PathBuf, Vec<String>> {
        panic!("the config should not be read")
    }

    fn fixed(_: &Path) -> Result<PathBuf, Vec<String>> {
        Ok(PathBuf::from("/from/config.sock"))
    }

    fn broken(p: &Path) -> Result<PathBuf, Vec<String>> {
        Err(vec![format!("{}:1:1: error: bad", p.display())])
    }

    #[test]
    fn flag_wins() {
        let e = env(1000, None, Path::new("/nonexistent/config.yaml"));
        let got = resolve(
            Some(Path::new("/x.sock")),
            Some(Path::new("/c.yaml")),
            &e,
            &never,
        );
        assert_eq!(got.unwrap(), PathBuf::from("/x.sock"));
    }

    #[test]
    fn explicit_config() {
        let e = env(1000, None, Path::new("/nonexistent/config.yaml"));
        let got = resolve(None, Some(Path::new("/c.yaml")), &e, &fixed).unwrap();
        assert_eq!(got, PathBuf::from("/from/config.sock"));
        let f = resolve(None, Some(Path::new("/c.yaml")), &e, &broken).unwrap_err();
        assert_eq!(f.code, 1);
        assert!(
            f.human().starts_with("/c.yaml:1:1: error: bad\n"),
            "{}",
            f.human()
        );
    }

    #[test]
    fn default_config_when_present_else_builtin() {
        let e = env(
            1000,
            Some("/run/user/1000"),
            Path::new("/nonexistent/c.yaml"),
        );
        assert_eq!(
            resolve(None, None, &e, &never).unwrap(),
            PathBuf::from("/run/user/1000/coffey.sock")
        );
        // An existing default config is read...
        let present = std::env::current_exe().unwrap();
        let e = env(1000, None, &present);
        assert_eq!(
            resolve(None, None, &e, &fixed).unwrap(),
            PathBuf::from("/from/config.sock")
        );
        // ...and when it does not load, the built-in default is used.
        assert_eq!(
            resolve(None, None, &e, &broken).unwrap(),
            PathBuf::from("/tmp/coffey-1000.sock")
        );
    }

    #[test]
    fn builtin_rule() {
        let none = Path::new("/nonexistent");
        assert_eq!(
            builtin_default(&env(0, Some("/run/user/0"), none)),
            PathBuf::from("/run/coffey.sock")
        );
        assert_eq!(
            builtin_default(&env(1000, Some("/run/user/1000"), none)),
            PathBuf::from("/run/user/1000/coffey.sock")
        );
        assert_eq!(
            builtin_default(&env(1000, Some(""), none)),
            PathBuf::from("/tmp/coffey-1000.sock")
        );
        assert_eq!(
            builtin_default(&env(1000, None, none)),
            PathBuf::from("/tmp/coffey-1000.sock")
        );
    }
}
