//! Records the git revision the agents were built from, for the `agent_build_info` metric.
//!
//! Order of preference: the `GIT_REVISION` environment variable at build time (image builds pass it as a build
//! argument, because the build context usually has no `.git`), then `git rev-parse` in the source tree, then
//! `unknown`. The result is exposed to the crate as the `AGENT_GIT_REVISION` compile-time variable.

use std::{path::Path, process::Command};

fn main() {
    println!("cargo:rerun-if-env-changed=GIT_REVISION");
    let revision = std::env::var("GIT_REVISION")
        .ok()
        .map(|r| r.trim().to_owned())
        .filter(|r| is_revision(r))
        .or_else(git_revision)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=AGENT_GIT_REVISION={revision}");
}

/// A label value we are willing to publish: a short run of hex digits (a commit id), nothing else.
fn is_revision(raw: &str) -> bool {
    (7..=40).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_hexdigit())
}

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8(output.stdout).ok()?.trim().to_owned())
}

fn git_revision() -> Option<String> {
    let revision = git(&["rev-parse", "--short=12", "HEAD"]).filter(|r| is_revision(r))?;
    // Rebuild when HEAD moves: HEAD itself (branch switch, detached checkout) and the branch it points to (commit).
    // Paths come from git so that worktrees, whose .git is a file, work too.
    for path in ["HEAD", "packed-refs"] {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            watch(&file);
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(file) = git(&["rev-parse", "--git-path", &branch])
    {
        watch(&file);
    }
    Some(revision)
}

fn watch(file: &str) {
    if Path::new(file).exists() {
        println!("cargo:rerun-if-changed={file}");
    }
}
