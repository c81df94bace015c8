//! `user:` and `group:`: resolved on the target, with the login environment.

use std::collections::BTreeMap;

use super::super::raw::RawService;
use super::super::target::UserEnt;
use super::{Ctx, K, MAX_GROUPS};

/// What `user:` and `group:` resolve to.
#[derive(Default)]
pub(super) struct Creds {
    pub(super) user: Option<(String, u32, u32)>,
    pub(super) group: Option<(String, u32)>,
    pub(super) groups: Vec<u32>,
    pub(super) login_env: Vec<String>,
    /// Why the service cannot start as configured ("user not found: x").
    pub(super) error: Option<String>,
}

/// `user:` gives a login environment, as login(1), su - and systemd's
/// `User=` do: HOME, USER, LOGNAME and SHELL from the passwd entry, unless
/// `env` sets them.
fn login_env(u: &UserEnt, env_keys: &BTreeMap<String, usize>) -> Vec<String> {
    let home = if u.home.is_empty() { "/" } else { &u.home };
    let shell = if u.shell.is_empty() {
        "/bin/sh"
    } else {
        &u.shell
    };
    [
        ("HOME", home),
        ("USER", &u.name),
        ("LOGNAME", &u.name),
        ("SHELL", shell),
    ]
    .into_iter()
    .filter(|(k, _)| !env_keys.contains_key(*k))
    .map(|(k, v)| format!("{k}={v}"))
    .collect()
}

/// Resolves `user:` and `group:` on the target. A missing user or group is
/// a finding (see `target.rs`): the service is kept, marked so that its
/// start fails with the reason, and retried; a reload resolves it again.
pub(super) fn build_creds(
    cx: &mut Ctx,
    raw: &RawService,
    env_keys: &BTreeMap<String, usize>,
) -> Creds {
    let mut c = Creds::default();
    let mut ent = None;
    if let Some(u) = &raw.user {
        match cx.target.user(u) {
            Ok(e) => {
                if !e.known {
                    cx.warn(
                        &[K("user")],
                        format!(
                            "uid {} has no passwd entry; primary gid defaults to {}",
                            e.uid, e.gid
                        ),
                    );
                }
                c.user = Some((e.name.clone(), e.uid, e.gid));
                ent = Some(e);
            }
            Err(msg) => {
                cx.finding(&[K("user")], &msg);
                c.error = Some(msg);
            }
        }
    }
    if let Some(gname) = &raw.group {
        match cx.target.group(gname) {
            Ok(gr) => c.group = Some(gr),
            Err(msg) => {
                cx.finding(&[K("group")], &msg);
                c.error.get_or_insert(msg);
            }
        }
    }
    let Some(e) = ent.filter(|e| e.known) else {
        return c;
    };
    c.login_env = login_env(&e, env_keys);
    let gid = c.group.as_ref().map_or(e.gid, |(_, gid)| *gid);
    match cx.target.groups_of(&e.name, gid) {
        Ok(gids) if gids.len() > MAX_GROUPS => {
            let msg = format!(
                "user '{}' is in {} groups, the most is {MAX_GROUPS}",
                e.name,
                gids.len()
            );
            cx.finding(&[K("user")], &msg);
            c.error.get_or_insert(msg);
        }
        Ok(gids) => c.groups = gids,
        Err(msg) => {
            cx.finding(&[K("user")], &msg);
            c.error.get_or_insert(msg);
        }
    }
    c
}
