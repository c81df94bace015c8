//! Facts about the target system: does the binary exist and is it
//! executable, do the user and group exist, which groups is the user in.
//!
//! These are not properties of the config. A missing binary may appear
//! after a mount, and a build host lacks the image's users, so the loader
//! reports them as warnings when it checks the running system
//! ([`Target::Host`]: the daemon and plain `validate`), and the daemon
//! fails only that service, which retries. `validate --root DIR` checks
//! them against an image tree ([`Target::Root`]), and there they are
//! errors. Lookups happen here, at load time (startup or the compile
//! child), never in the daemon's loop.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::unistd::{self, AccessFlags, Gid, Group, Uid, User};

/// Where binaries, users and groups are looked up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Target {
    /// The running system (through NSS for users and groups).
    #[default]
    Host,
    /// An image tree: `DIR/<binary>`, `DIR/etc/passwd`, `DIR/etc/group`.
    Root(PathBuf),
}

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct UserEnt {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
    /// Has a passwd entry (a bare numeric uid may not).
    pub known: bool,
}

/// Symlinks followed inside an image before giving up (Linux's MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

fn numeric(name: &str) -> Option<u32> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

impl Target {
    /// Whether its findings are errors (an image) or warnings (this host).
    pub(super) fn strict(&self) -> bool {
        matches!(self, Target::Root(_))
    }

    /// Where a finding was made, for the message.
    pub(super) fn place(&self) -> String {
        match self {
            Target::Host => {
                "on this host; the service fails to start and is retried until it is fixed"
                    .to_owned()
            }
            Target::Root(dir) => format!("in {}", dir.display()),
        }
    }

    /// `binary` must be an executable regular file.
    pub(super) fn executable(&self, path: &Path) -> Result<(), String> {
        match self {
            Target::Host => {
                unistd::access(path, AccessFlags::X_OK).map_err(|e| e.desc().to_owned())?;
                match std::fs::metadata(path) {
                    Ok(m) if m.is_file() => Ok(()),
                    Ok(_) => Err("not a regular file".to_owned()),
                    Err(e) => Err(e.to_string()),
                }
            }
            Target::Root(dir) => {
                let real = in_root(dir, path)?;
                match std::fs::metadata(&real) {
                    Ok(m) if !m.is_file() => Err("not a regular file".to_owned()),
                    Ok(m) if m.permissions().mode() & 0o111 == 0 => {
                        Err("Permission denied".to_owned())
                    }
                    Ok(_) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        Err("No such file or directory".to_owned())
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }

    /// `user:` by name or number. Err: "user not found: X" or a lookup
    /// failure.
    pub(super) fn user(&self, name: &str) -> Result<UserEnt, String> {
        let by_uid = numeric(name);
        let found = match self {
            Target::Host => host_user(name, by_uid)?,
            Target::Root(dir) => {
                let text = read_db(dir, "etc/passwd")?;
                text.lines().find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    let (n, uid, gid) = (f.first()?, f.get(2)?, f.get(3)?);
                    let uid: u32 = uid.parse().ok()?;
                    let hit = match by_uid {
                        Some(u) => u == uid,
                        None => *n == name,
                    };
                    hit.then(|| UserEnt {
                        name: (*n).to_owned(),
                        uid,
                        gid: gid.parse().unwrap_or(uid),
                        home: f.get(5).copied().unwrap_or_default().to_owned(),
                        shell: f.get(6).copied().unwrap_or_default().to_owned(),
                        known: true,
                    })
                })
            }
        };
        match (found, by_uid) {
            (Some(u), _) => Ok(u),
            // A bare uid needs no entry (containers often run as one).
            (None, Some(uid)) => Ok(UserEnt {
                name: name.to_owned(),
                uid,
                gid: uid,
                home: String::new(),
                shell: String::new(),
                known: false,
            }),
            (None, None) => Err(format!("user not found: {name}")),
        }
    }

    /// `group:` (or `socket_group`) by name or number: (name, gid).
    pub(super) fn group(&self, name: &str) -> Result<(String, u32), String> {
        let by_gid = numeric(name);
        let found = match self {
            Target::Host => {
                let r = match by_gid {
                    Some(g) => Group::from_gid(Gid::from_raw(g)),
                    None => Group::from_name(name),
                };
                r.map_err(|e| format!("cannot look up group '{name}': {}", e.desc()))?
                    .map(|g| (g.name, g.gid.as_raw()))
            }
            Target::Root(dir) => {
                let text = read_db(dir, "etc/group")?;
                let hit = group_entries(&text).find_map(|(n, gid, _)| {
                    let hit = match by_gid {
                        Some(g) => g == gid,
                        None => n == name,
                    };
                    hit.then(|| (n.to_owned(), gid))
                });
                hit
            }
        };
        match (found, by_gid) {
            (Some(g), _) => Ok(g),
            (None, Some(gid)) => Ok((name.to_owned(), gid)),
            (None, None) => Err(format!("group not found: {name}")),
        }
    }

    /// initgroups(3) semantics: `gid` first, then every group that lists
    /// `user` as a member.
    pub(super) fn groups_of(&self, user: &str, gid: u32) -> Result<Vec<u32>, String> {
        match self {
            Target::Host => {
                let c = CString::new(user).map_err(|_| "user name contains a NUL byte")?;
                unistd::getgrouplist(&c, Gid::from_raw(gid))
                    .map(|v| v.into_iter().map(Gid::as_raw).collect())
                    .map_err(|e| format!("cannot list the groups of user '{user}': {}", e.desc()))
            }
            Target::Root(dir) => {
                let text = read_db(dir, "etc/group")?;
                let mut out = vec![gid];
                for (_, g, members) in group_entries(&text) {
                    if members.split(',').any(|m| m.trim() == user) && !out.contains(&g) {
                        out.push(g);
                    }
                }
                Ok(out)
            }
        }
    }
}

fn host_user(name: &str, by_uid: Option<u32>) -> Result<Option<UserEnt>, String> {
    let r = match by_uid {
        Some(u) => User::from_uid(Uid::from_raw(u)),
        None => User::from_name(name),
    };
    let u = r.map_err(|e| format!("cannot look up user '{name}': {}", e.desc()))?;
    Ok(u.map(|u| UserEnt {
        name: u.name,
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        home: u.dir.to_string_lossy().into_owned(),
        shell: u.shell.to_string_lossy().into_owned(),
        known: true,
    }))
}

/// (name, gid, members) of each well-formed line of a group file.
fn group_entries(text: &str) -> impl Iterator<Item = (&str, u32, &str)> {
    text.lines().filter_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let gid = f.next()?.parse().ok()?;
        Some((name, gid, f.next().unwrap_or_default()))
    })
}

fn read_db(dir: &Path, rel: &str) -> Result<String, String> {
    let p = dir.join(rel);
    std::fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
}

/// `path` (absolute) inside the image at `root`, with symlinks resolved
/// inside the image: an absolute link target starts again at `root`, and
/// `..` never climbs above it. The last component need not exist.
pub(super) fn in_root(root: &Path, path: &Path) -> Result<PathBuf, String> {
    let mut todo: Vec<PathBuf> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect();
    let mut done = PathBuf::new();
    let mut links = 0usize;
    while let Some(part) = todo.pop() {
        if part.as_os_str() == ".." {
            done.pop();
            continue;
        }
        let candidate = done.join(&part);
        match std::fs::read_link(root.join(&candidate)) {
            Ok(target) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err("Too many levels of symbolic links".to_owned());
                }
                if target.is_absolute() {
                    done = PathBuf::new();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => todo.push(PathBuf::from(n)),
                        Component::ParentDir => todo.push(PathBuf::from("..")),
                        _ => {}
                    }
                }
            }
            Err(_) => done = candidate,
        }
    }
    Ok(root.join(done))
}
