use super::*;

fn rec(target: &str, tag: &str, digest: &str, at: i64) -> TagRecord {
    TagRecord {
        target: target.into(),
        tag: tag.into(),
        step: "repository a -> b".into(),
        source: format!("a:{tag}"),
        source_digest: digest.into(),
        target_digest: digest.into(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        first_written: at,
        last_confirmed: at,
    }
}

#[test]
fn a_new_file_gets_the_schema_and_records_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let mut db = Db::open(&path).unwrap();
        assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
        for t in ["tags", "step_runs", "deletions"] {
            assert!(db.has_table(t).unwrap(), "{t}");
        }
        db.confirm_tag(&rec("b", "v1", "sha256:1", 10)).unwrap();
        // a later confirmation keeps the first write time, updates the rest
        let mut again = rec("b", "v1", "sha256:2", 20);
        again.first_written = 20;
        db.confirm_tag(&again).unwrap();
        db.run_started("repository a -> b", "copy", 5).unwrap();
        db.run_ended("repository a -> b", 7, true).unwrap();
        db.run_started("repository a -> b", "copy", 8).unwrap();
        db.run_ended("repository a -> b", 9, false).unwrap();
    }
    let mut db = Db::open(&path).unwrap();
    let got = db.tag("b", "v1").unwrap().unwrap();
    assert_eq!(
        (
            got.first_written,
            got.last_confirmed,
            got.target_digest.as_str()
        ),
        (10, 20, "sha256:2")
    );
    let runs = db.step_runs().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].last_start, Some(8));
    assert_eq!(runs[0].last_end, Some(9));
    assert_eq!(runs[0].result.as_deref(), Some("failed"));
    assert_eq!(runs[0].last_success, Some(7));
    // deletion: record gone, deletion logged
    db.record_deletion(&Deletion {
        at: 30,
        step: "repository a -> b".into(),
        target: "b".into(),
        tag: "v1".into(),
        digest: "sha256:2".into(),
        reason: "gone from the source".into(),
    })
    .unwrap();
    assert!(db.tag("b", "v1").unwrap().is_none());
    assert_eq!(db.deletions(Some("b")).unwrap().len(), 1);
    assert!(db.deletions(Some("c")).unwrap().is_empty());
}

#[test]
fn managed_tags_are_those_of_the_step_and_repository() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(&dir.path().join("s.db")).unwrap();
    db.confirm_tag(&rec("b", "v1", "sha256:1", 1)).unwrap();
    db.confirm_tag(&rec("b", "v2", "sha256:1", 1)).unwrap();
    db.confirm_tag(&rec("c", "v1", "sha256:1", 1)).unwrap();
    let mut other = rec("b", "v3", "sha256:1", 1);
    other.step = "repository x -> b".into();
    db.confirm_tag(&other).unwrap();
    let tags: Vec<String> = db
        .managed_tags("repository a -> b", "b")
        .unwrap()
        .into_iter()
        .map(|r| r.tag)
        .collect();
    assert_eq!(tags, ["v1", "v2"]);
    db.forget_tags("b", &["v2".to_string()]).unwrap();
    assert_eq!(db.managed_tags("repository a -> b", "b").unwrap().len(), 1);
    assert_eq!(db.forget("b", None).unwrap(), 2);
    assert_eq!(db.all_tags().unwrap().len(), 1);
}

#[test]
fn a_corrupt_or_foreign_file_is_one_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x42u8; 8192]).unwrap();
    let e = Db::open(&garbage).err().expect("garbage opens");
    assert!(matches!(e, StateError::Corrupt { .. }), "{e:?}");
    assert!(e.to_string().contains("garbage.db"), "{e}");
    assert_eq!(e.to_string().lines().count(), 1);

    let foreign = dir.path().join("foreign.db");
    let c = rusqlite::Connection::open(&foreign).unwrap();
    c.execute_batch("CREATE TABLE x (a)").unwrap();
    drop(c);
    let e = Db::open(&foreign).err().expect("foreign opens");
    assert!(matches!(e, StateError::Corrupt { .. }), "{e:?}");

    let newer = dir.path().join("newer.db");
    drop(Db::open(&newer).unwrap());
    let c = rusqlite::Connection::open(&newer).unwrap();
    c.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(c);
    let e = Db::open(&newer).err().expect("newer opens");
    assert!(matches!(e, StateError::TooNew { found: 99, .. }), "{e:?}");

    let e = Db::open(dir.path()).err().expect("a directory opens");
    assert!(matches!(e, StateError::Open { .. }), "{e:?}");
}

#[test]
fn a_file_locked_by_another_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    drop(Db::open(&path).unwrap());
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let e = Db::open(&path).err().expect("opened while locked");
    assert!(matches!(e, StateError::Locked { .. }), "{e:?}");
    assert!(e.to_string().contains("s.db"));
}

#[test]
fn a_second_writer_is_refused_while_readers_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let mut writer = Db::open(&path).unwrap();
    writer.confirm_tag(&rec("b", "v1", "sha256:1", 1)).unwrap();
    // flock is per open file: a second open in the same process is refused like another
    // process would be, and names the holder's pid from the lock file.
    let e = Db::open(&path).err().expect("a second writer opened");
    assert!(
        matches!(&e, StateError::Held { pid: Some(p), .. } if *p == std::process::id()),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("s.db:") && text.contains("another regsync process"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1);
    let reader = Db::open_read(&path).unwrap();
    assert_eq!(reader.all_tags().unwrap().len(), 1);
    // a reader cannot write, even by mistake
    let mut reader = reader;
    assert!(reader.forget("b", None).is_err());
    drop(writer);
    // released with the writer: the next one gets the file
    let mut next = Db::open(&path).unwrap();
    assert_eq!(next.forget("b", None).unwrap(), 1);
}

#[test]
fn a_reader_needs_an_existing_file_of_this_schema() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let e = Db::open_read(&missing)
        .err()
        .expect("a missing file opened");
    assert!(matches!(e, StateError::Open { .. }), "{e:?}");
    assert!(e.to_string().contains("no such file"), "{e}");
    assert!(!missing.exists(), "a reader created the file");
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let e = Db::open_read(&empty).err().expect("an empty file opened");
    assert!(matches!(e, StateError::TooOld { found: 0, .. }), "{e:?}");
}

#[test]
fn the_handle_answers_from_its_thread() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("s.db")).unwrap();
    let h = StateHandle::spawn(db);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        h.call(|db| db.confirm_tag(&rec("b", "v1", "sha256:1", 1)))
            .await
            .unwrap();
        let n = h.call(|db| Ok(db.all_tags()?.len())).await.unwrap();
        assert_eq!(n, 1);
    });
}

#[test]
fn a_writer_through_another_path_to_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.db");
    let _writer = Db::open(&real).unwrap();
    // A symlink, and a path through `..`: the same database, so the same lock.
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let roundabout = dir.path().join("sub/../real.db");
    for other in [&link, &roundabout] {
        let e = Db::open(other).err();
        assert!(
            matches!(e, Some(StateError::Held { .. })),
            "a second writer opened {} while {} is held: {e:?}",
            other.display(),
            real.display()
        );
    }
}
