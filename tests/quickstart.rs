//! The README's first command: `regsync once -c config-examples/quickstart.yml` mirrors the OCI
//! layout shipped in `config-examples/quickstart/hello` into `./mirror/hello`, offline.

mod common;

use common::{assert_same_repo, Loc};
use std::path::Path;
use std::process::Command;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

#[test]
fn quickstart_mirrors_the_shipped_layout_into_mirror() {
    // Run from a scratch copy of the checkout's examples so ./mirror lands in a temp dir.
    let work = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("config-examples");
    copy_dir(&examples, &work.path().join("config-examples"));
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_regsync"))
            .args([
                "once",
                "-c",
                "config-examples/quickstart.yml",
                "--logopt",
                "json",
            ])
            .current_dir(work.path())
            .env_remove("DOCKER_CONFIG")
            .output()
            .unwrap()
    };
    let first = run();
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "quickstart failed: {stderr}");

    let source = Loc::from(
        work.path()
            .join("config-examples/quickstart/hello")
            .as_path(),
    );
    let mirror = Loc::from(work.path().join("mirror/hello").as_path());
    let mut mirrored = common::tags(&mirror, "");
    mirrored.sort();
    assert_eq!(mirrored, ["latest", "v0", "v1"]);
    assert_same_repo(source, "", mirror, "");

    // A second run finds everything in place and copies nothing.
    let second = run();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "second run failed: {stderr}");
    let summary = stderr
        .lines()
        .find(|l| l.contains("\"Sync summary\""))
        .expect("summary line");
    let summary: serde_json::Value = serde_json::from_str(summary).unwrap();
    assert_eq!(summary["images_copied"], 0, "{summary}");
    assert_eq!(summary["images_matched"], 3, "{summary}");
}
