//! Commands and environment as compose and systemd users write them
//! (issue 11, part 1): `command:` as a string or list, `env:` as a map,
//! `${VAR}` expansion, `env_file:`, their precedence, and a bare program
//! name looked up in `PATH` at each spawn. Each test runs the daemon with
//! real services that write what they got (argv, environment) to files.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_macros,
    clippy::disallowed_methods
)]

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// An executable shell script at `dir/name`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A program that writes its argv, one per line, to `dir/argv`.
fn argv_printer(dir: &Path) {
    let out = dir.join("argv");
    script(
        dir,
        "show",
        &format!(
            "for a in \"$0\" \"$@\"; do printf '%s\\n' \"$a\"; done > {}",
            out.display()
        ),
    );
}

/// Waits for `dir/name` to be written by a service; its lines.
fn lines_of(dir: &Path, name: &str) -> Vec<String> {
    let p = dir.join(name);
    wait_for(10.0, &format!("{} written", p.display()), || {
        let t = std::fs::read_to_string(&p).ok()?;
        t.ends_with('\n')
            .then(|| t.lines().map(str::to_owned).collect())
    })
}

/// `coffeyd validate -c FILE` on `text` (with `$DIR` replaced): exit
/// code and output, and the config file's path.
fn validate(tag: &str, text: &str, env: &[(&str, &str)]) -> (i32, String, PathBuf) {
    let dir = tempdir(tag);
    let file = dir.join("config.yaml");
    std::fs::write(&file, text.replace("$DIR", &dir.display().to_string())).unwrap();
    let mut c = Command::new(BIN);
    c.arg("validate").arg("-c").arg(&file);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let mut out = String::from_utf8_lossy(&o.stdout).into_owned();
    out.push_str(&String::from_utf8_lossy(&o.stderr));
    (o.status.code().unwrap_or(-1), out, file)
}

/// Asserts a `FILE:LINE:COL: SEVERITY: service 'a': ...MSG...` line.
#[track_caller]
fn has(out: &str, file: &Path, pos: &str, severity: &str, msg: &str) {
    let prefix = format!("{}:{pos}: {severity}: service 'a': ", file.display());
    assert!(
        out.lines()
            .any(|l| l.starts_with(&prefix) && l.contains(msg)),
        "expected `{prefix}...{msg}` in:\n{out}"
    );
}

#[test]
fn a_command_string_is_split_with_shell_quoting() {
    let services = "  - name: a\n    command: $DIR/show plain \"two words\" 'single $HOME' \"\" esc\\ aped --save \"\"\n    type: oneshot\n";
    let d = Daemon::start_with("cmdsplit", "", services, argv_printer);
    let got = lines_of(&d.dir, "argv");
    let show = d.dir.join("show").display().to_string();
    assert_eq!(
        got,
        [
            &show,
            "plain",
            "two words",
            "single $HOME",
            "",
            "esc aped",
            "--save",
            ""
        ],
        "{}",
        d.log_text()
    );
    finish(d);
}

#[test]
fn a_command_list_is_the_argv_as_written() {
    let services = "  - name: a\n    command: [$DIR/show, 'a b', '\"q\"']\n    type: oneshot\n";
    let d = Daemon::start_with("cmdlist", "", services, argv_printer);
    let got = lines_of(&d.dir, "argv");
    let show = d.dir.join("show").display().to_string();
    assert_eq!(got, [show.as_str(), "a b", "\"q\""]);
    finish(d);
}

#[test]
fn command_and_binary_in_one_service_is_an_error() {
    let (code, out, file) = validate(
        "cmdboth",
        "services:\n  - name: a\n    binary: /bin/sh\n    command: /bin/true\n",
        &[],
    );
    assert_eq!(code, 1, "{out}");
    has(
        &out,
        &file,
        "4:14",
        "error",
        "give either `command` or `binary` and `args`, not both",
    );
    let (code, out, file) = validate(
        "cmdargs",
        "services:\n  - name: a\n    args: [x]\n    command: /bin/true\n",
        &[],
    );
    assert_eq!(code, 1, "{out}");
    has(&out, &file, "4:14", "error", "not both");
}

#[test]
fn a_command_with_an_open_quote_or_a_relative_program_is_an_error() {
    let (code, out, file) = validate(
        "cmdquote",
        "services:\n  - name: a\n    command: /bin/echo 'open\n",
        &[],
    );
    assert_eq!(code, 1, "{out}");
    has(&out, &file, "3:14", "error", "unterminated quote");
    let (code, out, file) = validate(
        "cmdrel",
        "services:\n  - name: a\n    command: ./run --x\n",
        &[],
    );
    assert_eq!(code, 1, "{out}");
    has(
        &out,
        &file,
        "3:14",
        "error",
        "must be an absolute path or a bare name",
    );
    let (code, out, file) = validate(
        "cmdempty",
        "services:\n  - name: a\n    command: \"\"\n",
        &[],
    );
    assert_eq!(code, 1, "{out}");
    has(&out, &file, "3:14", "error", "command is empty");
}

#[test]
fn env_as_a_map_gives_strings_numbers_and_bools_as_text() {
    let services = svc(
        "a",
        "echo \"$PORT|$N|$B|$F|$E|\" > $DIR/env",
        "    type: oneshot\n    env: {PORT: \"8080\", N: 5, B: true, F: 1.5, E: ''}\n",
    );
    let d = Daemon::start("envmap", "", &services);
    assert_eq!(lines_of(&d.dir, "env"), ["8080|5|true|1.5||"]);
    finish(d);
}

#[test]
fn an_env_map_entry_without_a_value_is_an_error_at_its_key() {
    let (code, out, file) = validate(
        "envnull",
        "services:\n  - name: a\n    binary: /bin/true\n    env:\n      A: x\n      B:\n",
        &[],
    );
    assert_eq!(code, 1, "{out}");
    has(&out, &file, "6:7", "error", "env key 'B' has no value");
    let (code, out, file) = validate(
        "envtwice",
        "services:\n  - name: a\n    binary: /bin/true\n    env:\n      A: x\n      B: [1]\n",
        &[],
    );
    assert_eq!(code, 1, "{out}");
    has(
        &out,
        &file,
        "6:10",
        "error",
        "expected a string, number or boolean",
    );
}

#[test]
fn variables_expand_in_command_args_and_env_from_the_service_and_the_daemon() {
    let services = "  - name: a\n    command: $DIR/show ${GREETING} ${COFFEY_UNSET_X:-fallback} $$HOME '${GREETING}' a$${B}\n    type: oneshot\n    env: {GREETING: \"hi there\"}\n\
                    \x20 - name: b\n    binary: /bin/sh\n    args: ['-c', 'echo \"$P|$Q|$$|${COFFEY_UNSET_X-dflt}\" > $DIR/env']\n    type: oneshot\n    env: ['P=${PATH}', 'Q=${P}!']\n";
    let d = Daemon::start_with("expand", "", services, argv_printer);
    let show = d.dir.join("show").display().to_string();
    assert_eq!(
        lines_of(&d.dir, "argv"),
        [&show, "hi there", "fallback", "$HOME", "hi there", "a${B}"]
    );
    // P from the daemon's environment, Q from the service's own P.
    let path = std::env::var("PATH").unwrap();
    let env = lines_of(&d.dir, "env");
    assert_eq!(env, [format!("{path}|{path}!|$|dflt")], "{}", d.log_text());
    finish(d);
}

#[test]
fn an_unset_variable_without_a_default_is_an_error_at_its_place() {
    let text = "services:\n  - name: a\n    binary: /bin/echo\n    args:\n      - x\n      - '${COFFEY_NOT_SET_1}'\n    env:\n      - A=${COFFEY_NOT_SET_2}\n  - name: b\n    command: /bin/echo ${COFFEY_FROM_ENV}\n";
    let (code, out, file) = validate("expunset", text, &[]);
    assert_eq!(code, 1, "{out}");
    has(
        &out,
        &file,
        "6:9",
        "error",
        "variable 'COFFEY_NOT_SET_1' is not set (give a default: `${COFFEY_NOT_SET_1:-default}`)",
    );
    has(
        &out,
        &file,
        "8:9",
        "error",
        "variable 'COFFEY_NOT_SET_2' is not set",
    );
    assert!(
        out.contains(":10:14: error: service 'b': variable 'COFFEY_FROM_ENV' is not set"),
        "{out}"
    );
    // The environment validate (and the daemon's compile child) runs with.
    let text = text.replace("_1}", "_1:-}").replace("_2}", "_2-x}");
    let (code, out, _) = validate("expset", &text, &[("COFFEY_FROM_ENV", "1")]);
    assert_eq!(code, 0, "{out}");
    let (code, out, file) = validate(
        "expbad",
        "services:\n  - name: a\n    binary: /bin/sh\n    args: ['-c', 'D=${0%/*}']\n",
        &[],
    );
    assert_eq!(code, 1, "{out}");
    has(
        &out,
        &file,
        "4:11",
        "error",
        "is not a variable (write `$${` for a literal `${`)",
    );
}

#[test]
fn env_files_are_read_with_comments_quotes_and_export_and_env_wins() {
    let prep = |dir: &Path| {
        std::fs::write(
            dir.join("base.env"),
            "# comment\n\n; systemd comment\nexport A=file\nB='single ${x}'\nC=\"dq \\\"x\\\" \\$y\"\nD=from-file\nE=${D}-e # note\nHOME=/from-file\n",
        )
        .unwrap();
        std::fs::write(dir.join("second.env"), "F=second\nA=second\n").unwrap();
    };
    let services = svc(
        "a",
        "echo \"$A|$B|$C|$D|$E|$F|$HOME\" > $DIR/env",
        "    type: oneshot\n    env_file: [base.env, -missing.env, $DIR/second.env]\n    env: {D: from-env}\n",
    );
    let d = Daemon::start_with("envfile", "", &services, prep);
    assert_eq!(
        lines_of(&d.dir, "env"),
        ["second|single ${x}|dq \"x\" $y|from-env|from-file-e|second|/from-file"],
        "{}",
        d.log_text()
    );
    finish(d);
}

#[test]
fn env_file_errors_name_the_config_or_the_env_file_line() {
    let dir = tempdir("envfilebad");
    std::fs::write(dir.join("bad.env"), "A=1\n\nnot a pair\n").unwrap();
    std::fs::write(dir.join("unset.env"), "B=${COFFEY_NOT_SET_3}\n").unwrap();
    let file = dir.join("config.yaml");
    std::fs::write(
        &file,
        "services:\n  - name: a\n    binary: /bin/true\n    env_file: missing.env\n  - name: b\n    binary: /bin/true\n    env_file:\n      - bad.env\n      - unset.env\n      - -optional.env\n",
    )
    .unwrap();
    let o = Command::new(BIN)
        .args(["validate", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(1), "{out}");
    has(
        &out,
        &file,
        "4:15",
        "error",
        &format!(
            "env_file {}: No such file or directory",
            dir.join("missing.env").display()
        ),
    );
    let bad = dir.join("bad.env");
    assert!(
        out.contains(&format!(
            "{}:3:1: error: service 'b': env_file: 'not a pair' is not KEY=VALUE",
            bad.display()
        )),
        "{out}"
    );
    let unset = dir.join("unset.env");
    assert!(
        out.contains(&format!(
            "{}:1:1: error: service 'b': env_file: variable 'COFFEY_NOT_SET_3' is not set",
            unset.display()
        )),
        "{out}"
    );
    assert!(!out.contains("optional.env"), "{out}");
}

#[test]
fn a_bare_program_name_is_looked_up_in_path_at_each_spawn() {
    // Not installed at boot: each start fails like a missing binary,
    // until the program appears in the service's PATH.
    let services = "  - name: a\n    command: coffey-late-prog one 'two words'\n    env: {PATH: \"$DIR/empty:$DIR/bin:/usr/bin:/bin\"}\n    backoff: {initial: 100ms, max: 100ms}\n    type: oneshot\n    restart: on-failure\n";
    let mut d = Daemon::start_with("pathlate", "", services, |dir| {
        std::fs::create_dir_all(dir.join("bin")).unwrap();
    });
    d.wait_count("exec failed: No such file or directory", 2, 10.0);
    let out = d.dir.join("argv");
    script(
        &d.dir.join("bin"),
        "coffey-late-prog",
        &format!("printf '%s\\n' \"$0\" \"$@\" > {}", out.display()),
    );
    let prog = d.dir.join("bin/coffey-late-prog").display().to_string();
    assert_eq!(
        lines_of(&d.dir, "argv"),
        [prog.as_str(), "one", "two words"]
    );
    finish(d);
}

#[test]
fn the_path_search_skips_missing_and_not_executable_entries_and_uses_the_daemons_path() {
    let services = "  - name: a\n    command: coffey-prog\n    env: {PATH: \"/nonexistent:$DIR/file:$DIR/noexec:$DIR/bin\"}\n    type: oneshot\n\
                    \x20 - name: b\n    command: sh -c 'echo \"$$0\" > $DIR/b'\n    type: oneshot\n";
    let d = Daemon::start_with("pathskip", "", services, |dir| {
        std::fs::write(dir.join("file"), "not a directory").unwrap();
        std::fs::create_dir_all(dir.join("noexec")).unwrap();
        std::fs::write(
            dir.join("noexec/coffey-prog"),
            "#!/bin/sh\necho wrong > $0.out\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        script(
            &dir.join("bin"),
            "coffey-prog",
            &format!("echo right > {}/a", dir.display()),
        );
    });
    assert_eq!(lines_of(&d.dir, "a"), ["right"], "{}", d.log_text());
    // b has no PATH of its own: the daemon's finds `sh`.
    assert_eq!(lines_of(&d.dir, "b"), ["sh"], "{}", d.log_text());
    finish(d);
}

#[test]
fn a_bare_name_not_found_when_all_paths_deny_it_fails_with_permission_denied() {
    let services = "  - name: a\n    command: coffey-prog\n    env: {PATH: \"$DIR/noexec:/nonexistent\"}\n    type: oneshot\n    restart: never\n";
    let mut d = Daemon::start_with("pathdenied", "", services, |dir| {
        std::fs::create_dir_all(dir.join("noexec")).unwrap();
        std::fs::write(dir.join("noexec/coffey-prog"), "#!/bin/sh\n").unwrap();
    });
    d.wait_log("exec failed: Permission denied", 10.0);
    finish(d);
}

#[test]
fn validate_warns_about_a_bare_name_not_in_path() {
    let (code, out, file) = validate(
        "pathwarn",
        "services:\n  - name: a\n    command: coffey-surely-missing --x\n    env: {PATH: /nonexistent}\n  - name: b\n    command: sh -c 'exit 0'\n",
        &[],
    );
    assert_eq!(code, 0, "{out}");
    has(
        &out,
        &file,
        "3:14",
        "warning",
        "program 'coffey-surely-missing' is not in PATH /nonexistent",
    );
    assert!(!out.contains("service 'b'"), "{out}");
}
