//! The container path of examples/Dockerfile and examples/k8s/pod.yaml,
//! run by a real OCI runtime (Debian's crun): a root filesystem laid out
//! as the image is (coffeyd as /coffeyd, examples/container/config.yaml,
//! its /www, busybox), read-only, with /run as the pod's emptyDir. The
//! test checks the dependency gating, the probes' commands, the read-only
//! root and SIGTERM -> the container's exit code.
//!
//! The host's busybox and libraries come in through a read-only bind of
//! /usr (the image has a static busybox). crun runs with
//! `--cgroup-manager=disabled` in a private mount namespace that sees
//! cgroup2 at /sys/fs/cgroup (crun 1.8 refuses a hybrid host otherwise):
//! the host's cgroups are never created, moved or changed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods,
    clippy::disallowed_macros
)]

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const CRUN: &str = "/usr/bin/crun";

struct Container {
    bundle: PathBuf,
    id: String,
    run: Child,
}

/// `crun ARGS` as the test runs it (see the module doc).
fn crun(bundle: &Path, args: &[&str]) -> Command {
    let mut script = String::from(
        "mount --make-rprivate / && mount -t cgroup2 none /sys/fs/cgroup && exec \"$0\" --cgroup-manager=disabled --root \"$1\"",
    );
    for i in 0..args.len() {
        script.push_str(&format!(" \"${}\"", i + 2));
    }
    let mut c = Command::new("unshare");
    c.args(["-m", "sh", "-c", &script, CRUN])
        .arg(bundle.join("state"))
        .args(args);
    c
}

/// The image's root filesystem and an OCI config that runs its
/// entrypoint read-only, /run from the bundle's `run` directory.
fn bundle(tag: &str) -> PathBuf {
    assert!(
        Path::new(CRUN).exists(),
        "{CRUN} is missing: apt-get install crun (.ci/run does)"
    );
    let b = tempdir(tag);
    let root = b.join("rootfs");
    for d in ["usr", "proc", "dev", "sys", "tmp", "etc/coffey", "www"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for (link, to) in [
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        std::os::unix::fs::symlink(to, root.join(link)).unwrap();
    }
    std::fs::create_dir_all(b.join("run")).unwrap();
    std::fs::create_dir_all(b.join("state")).unwrap();
    std::fs::copy(BIN, root.join("coffeyd")).unwrap();
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/container");
    std::fs::copy(ex.join("config.yaml"), root.join("etc/coffey/config.yaml")).unwrap();
    std::fs::copy(ex.join("www/index.html"), root.join("www/index.html")).unwrap();
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/coffeyd", "--container", "-c", "/etc/coffey/config.yaml"],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID"],
                "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID"],
                "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID"]
            },
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "coffeyd-demo",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]},
            {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]},
            {"destination": "/run", "type": "bind", "source": b.join("run"), "options": ["rbind", "rw"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"},
                           {"type": "uts"}, {"type": "network"}]
        }
    });
    std::fs::write(b.join("config.json"), spec.to_string()).unwrap();
    b
}

impl Container {
    fn start(tag: &str) -> Container {
        let bundle = bundle(tag);
        let id = format!("coffeyd-{tag}-{}", std::process::id());
        let run = crun(&bundle, &["run", "-b", bundle.to_str().unwrap(), &id])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(bundle.join("stdout")).unwrap())
            .stderr(std::fs::File::create(bundle.join("stderr")).unwrap())
            .spawn()
            .unwrap();
        Container { bundle, id, run }
    }

    fn log(&self) -> String {
        read_log(&self.bundle.join("run/coffey.log"))
    }

    /// `crun exec ID CMD...`: a probe, as the kubelet runs it.
    fn exec(&self, cmd: &[&str]) -> Output {
        let mut args = vec!["exec", &self.id];
        args.extend_from_slice(cmd);
        crun(&self.bundle, &args).output().unwrap()
    }

    /// `crun kill ID TERM`, then the runtime's exit code (the container's).
    fn terminate(mut self) -> i32 {
        let k = crun(&self.bundle, &["kill", &self.id, "TERM"])
            .output()
            .unwrap();
        assert!(k.status.success(), "crun kill: {k:?}");
        let code = wait_for(60.0, "the container to exit", || {
            self.run.try_wait().unwrap().map(|s| s.code().unwrap_or(-1))
        });
        let _ = crun(&self.bundle, &["delete", "-f", &self.id]).output();
        code
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.run.try_wait().ok().flatten().is_none() {
            let _ = crun(&self.bundle, &["kill", &self.id, "KILL"]).output();
            let _ = self.run.wait();
            let _ = crun(&self.bundle, &["delete", "-f", &self.id]).output();
        }
    }
}

#[test]
fn the_demo_image_runs_gated_read_only_and_exits_with_its_main() {
    let c = Container::start("demo");
    // Gating: app starts only once web has passed its readiness check.
    let log = wait_for(60.0, "app to start", || {
        let l = c.log();
        l.contains("app: spawned").then_some(l)
    });
    let ready = log
        .find("web: ready")
        .unwrap_or_else(|| panic!("no web: ready\n{log}"));
    let app = log.find("app: spawned").unwrap();
    assert!(ready < app, "app started before web was ready:\n{log}");
    // The pod's probes, run in the container as the kubelet does.
    let ready = c.exec(&["/coffeyd", "wait", "web", "--healthy", "--timeout", "1s"]);
    assert!(ready.status.success(), "readiness probe: {ready:?}");
    let unknown = c.exec(&["/coffeyd", "status", "nosuch"]);
    assert_eq!(unknown.status.code(), Some(3), "{unknown:?}");
    let status = c.exec(&["/coffeyd", "status", "app"]);
    assert!(status.status.success(), "liveness probe: {status:?}");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("running"), "{text}");
    // The root is read-only; /run (the emptyDir) is not.
    let w = c.exec(&["/bin/busybox", "touch", "/x"]);
    assert!(!w.status.success(), "wrote to the read-only root: {w:?}");
    assert!(c.bundle.join("run/coffey.sock").exists());
    // SIGTERM: app traps it and exits 0, which is the container's code.
    assert_eq!(c.terminate(), 0);
}
