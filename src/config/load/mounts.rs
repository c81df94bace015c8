//! `coffey.mounts`: each item checked, its fstab-style options turned into
//! `MS_*` flags and a data string.

use std::path::{Path, PathBuf};

use super::super::raw::{List, RawMount};
use super::super::spec::Mount;
use super::{check_path, Ctx, Seg, I, K};

/// fstab-style `options` -> (`MS_*` flags, data string). Known flag words
/// set (or, for their opposites, clear) a flag, later words winning; every
/// other word is passed to the filesystem, comma-joined in order.
pub(in super::super) fn parse_mount_options(options: &str) -> (u64, String) {
    use nix::libc;
    let mut flags: u64 = 0;
    let mut data: Vec<&str> = Vec::new();
    for word in options.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let (set, clear): (libc::c_ulong, libc::c_ulong) = match word {
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "noatime" => (libc::MS_NOATIME, 0),
            "atime" => (0, libc::MS_NOATIME),
            "relatime" => (libc::MS_RELATIME, 0),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "remount" => (libc::MS_REMOUNT, 0),
            "bind" => (libc::MS_BIND, 0),
            "rbind" => (libc::MS_BIND | libc::MS_REC, 0),
            // fstab's placeholder (rw,suid,dev,exec,async): nothing to set.
            "defaults" => (0, 0),
            other => {
                data.push(other);
                (0, 0)
            }
        };
        // c_ulong is u32 on 32-bit targets: a lossless widening there.
        #[allow(clippy::unnecessary_cast)]
        let (set, clear) = (set as u64, clear as u64);
        flags = (flags & !clear) | set;
    }
    (flags, data.join(","))
}

/// `coffey.mounts`: each item checked on its own; broken ones are left out.
pub(super) fn build_mounts(cx: &mut Ctx, list: Option<&List<RawMount>>) -> Vec<Mount> {
    let mut mounts = Vec::new();
    let Some(list) = list else {
        return mounts;
    };
    for (i, item) in list.iter().enumerate() {
        let item_path = [K("coffey"), K("mounts"), I(i)];
        let Some(raw) = item else {
            if !cx.tainted(&item_path) {
                cx.err(&item_path, "empty mount entry".to_owned());
            }
            continue;
        };
        if let Some(m) = mount(cx, i, raw) {
            mounts.push(m);
        }
    }
    mounts
}

/// The path of key `k` of mount `i`.
fn at(i: usize, k: &'static str) -> [Seg; 4] {
    [K("coffey"), K("mounts"), I(i), K(k)]
}

/// Mount `i`; None when any of its keys is unusable (all are reported).
fn mount(cx: &mut Ctx, i: usize, raw: &RawMount) -> Option<Mount> {
    let mut ok = true;
    let target = mount_target(cx, i, raw, &mut ok);
    let fstype = match &raw.fstype {
        None => {
            if !cx.tainted(&at(i, "type")) {
                cx.err(
                    &[K("coffey"), K("mounts"), I(i)],
                    format!(
                        "mounts[{i}]: missing required key 'type' (the filesystem type: proc, tmpfs, ext4, ...)"
                    ),
                );
            }
            ok = false;
            String::new()
        }
        Some(t) => {
            if !check_path(cx, &at(i, "type"), "mount type", t) {
                ok = false;
            }
            t.clone()
        }
    };
    let source = match &raw.source {
        Some(s) => {
            if !check_path(cx, &at(i, "source"), "mount source", s) {
                ok = false;
            }
            s.clone()
        }
        None => fstype.clone(),
    };
    let options = raw.options.as_deref().unwrap_or_default();
    if options.contains('\0') {
        cx.err(
            &at(i, "options"),
            "mount options contain a NUL byte".to_owned(),
        );
        ok = false;
    }
    let (flags, data) = parse_mount_options(options);
    ok.then_some(Mount {
        source,
        target,
        fstype,
        flags,
        data,
    })
}

/// `target`: required, and an absolute path.
fn mount_target(cx: &mut Ctx, i: usize, raw: &RawMount, ok: &mut bool) -> PathBuf {
    let Some(t) = &raw.target else {
        if !cx.tainted(&at(i, "target")) {
            cx.err(
                &[K("coffey"), K("mounts"), I(i)],
                format!("mounts[{i}]: missing required key 'target'"),
            );
        }
        *ok = false;
        return PathBuf::new();
    };
    if !check_path(cx, &at(i, "target"), "mount target", t) {
        *ok = false;
    } else if !Path::new(t).is_absolute() {
        cx.err(
            &at(i, "target"),
            format!("mount target '{t}' must be an absolute path"),
        );
        *ok = false;
    }
    PathBuf::from(t)
}
