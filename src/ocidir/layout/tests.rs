use super::*;

fn store() -> OciDirStore {
    OciDirStore::new(slog::Logger::root(slog::Discard, slog::o!()))
}

fn oref(dir: &Path, suffix: &str) -> Reference {
    Reference::parse(&format!("ocidir://{}{suffix}", dir.display())).unwrap()
}

/// `dir` holding the config blob every [`image`] names (manifests are only written over
/// blobs the layout has).
fn with_config(dir: PathBuf) -> PathBuf {
    let path = blob_path(&dir, &Digest::sha256_of(b"{}")).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"{}").unwrap();
    dir
}

fn image(n: u32) -> Manifest {
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[],"annotations":{{"n":"{n}"}}}}"#,
        media::OCI_MANIFEST,
        Digest::sha256_of(b"{}")
    );
    Manifest::from_bytes(Bytes::from(body), None)
}

fn bytes_stream(parts: Vec<&'static [u8]>) -> BlobStream {
    futures::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from_static(p)))).boxed()
}

async fn index_of(dir: &Path) -> IndexFile {
    read_index(dir).await.unwrap()
}

fn names(idx: &IndexFile) -> Vec<(Option<String>, Digest)> {
    idx.manifests
        .iter()
        .map(|d| (ref_name(d).map(String::from), d.digest.clone()))
        .collect()
}

async fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(mut rd) = tokio::fs::read_dir(&d).await else {
            continue;
        };
        while let Some(e) = rd.next_entry().await.unwrap() {
            if e.file_type().await.unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn put_get_head_by_tag_and_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = with_config(tmp.path().join("layout"));
    let s = store();
    let m = image(1);
    s.manifest_put(&oref(&dir, ":v1"), &m, false).await.unwrap();

    assert_eq!(
        tokio::fs::read(dir.join("oci-layout")).await.unwrap(),
        LAYOUT_CONTENT
    );
    let raw = tokio::fs::read_to_string(dir.join("index.json"))
        .await
        .unwrap();
    assert!(raw.starts_with(
        r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:"#
    ));
    assert!(!raw.contains('\n') && !raw.contains(": "));
    let idx = index_of(&dir).await;
    assert_eq!(idx.manifests.len(), 1);
    let e = &idx.manifests[0];
    assert_eq!(e.size, m.bytes.len() as i64);
    let ann = e.annotations.as_ref().unwrap();
    assert_eq!(ann[ANNOTATION_REF_NAME], "v1");
    assert!(ann[ANNOTATION_CREATED].ends_with('Z'));
    assert!(e.platform.is_none() && e.urls.is_none());

    let head = s.manifest_head(&oref(&dir, ":v1")).await.unwrap().unwrap();
    assert_eq!(head, m.descriptor());
    let got = s.manifest_get(&oref(&dir, ":v1")).await.unwrap();
    assert_eq!(got.bytes, m.bytes);
    assert_eq!(got.media_type, media::OCI_MANIFEST);
    assert_eq!(got.digest, m.digest);

    let by_digest = oref(&dir, &format!("@{}", m.digest));
    assert_eq!(s.manifest_get(&by_digest).await.unwrap().bytes, m.bytes);
    assert_eq!(
        s.manifest_head(&by_digest).await.unwrap().unwrap().digest,
        m.digest
    );
    // tag and digest: the digest wins
    let both = oref(&dir, &format!(":nope@{}", m.digest));
    assert_eq!(s.manifest_get(&both).await.unwrap().digest, m.digest);

    // missing tag / digest
    assert!(s.manifest_head(&oref(&dir, ":v2")).await.unwrap().is_none());
    let e = s.manifest_get(&oref(&dir, ":v2")).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let other = oref(&dir, &format!("@{}", image(2).digest));
    assert!(s.manifest_head(&other).await.unwrap().is_none());
    assert!(s.manifest_get(&other).await.unwrap_err().is_not_found());
    // no tag, no digest → latest (absent here)
    assert!(s.manifest_head(&oref(&dir, "")).await.unwrap().is_none());
    s.manifest_put(&oref(&dir, ""), &image(3), false)
        .await
        .unwrap();
    assert_eq!(
        s.manifest_get(&oref(&dir, "")).await.unwrap().digest,
        image(3).digest
    );
    assert_eq!(
        s.manifest_get(&oref(&dir, ":latest")).await.unwrap().digest,
        image(3).digest
    );
}

#[tokio::test]
async fn tag_replacement_and_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = with_config(tmp.path().to_path_buf());
    let s = store();
    let (a, b, c) = (image(1), image(2), image(3));
    s.manifest_put(&oref(&dir, ":v1"), &a, false).await.unwrap();
    s.manifest_put(&oref(&dir, ":v2"), &b, false).await.unwrap();
    let before = index_of(&dir).await;

    // same tag, same digest: left as is (created annotation unchanged)
    s.manifest_put(&oref(&dir, ":v1"), &a, false).await.unwrap();
    assert_eq!(index_of(&dir).await.manifests, before.manifests);

    // same tag, new digest: replaced in place
    s.manifest_put(&oref(&dir, ":v1"), &c, false).await.unwrap();
    let idx = index_of(&dir).await;
    assert_eq!(
        names(&idx),
        vec![
            (Some("v1".into()), c.digest.clone()),
            (Some("v2".into()), b.digest.clone())
        ]
    );
    assert_eq!(
        s.manifest_get(&oref(&dir, ":v1")).await.unwrap().digest,
        c.digest
    );

    // later duplicates of a tag are removed
    let mut idx = idx;
    let mut dup = idx.manifests[0].clone();
    dup.digest = a.digest.clone();
    idx.manifests.push(dup);
    write_index(&s.gc, &dir, &idx).await.unwrap();
    s.manifest_put(&oref(&dir, ":v1"), &b, false).await.unwrap();
    assert_eq!(
        names(&index_of(&dir).await),
        vec![
            (Some("v1".into()), b.digest.clone()),
            (Some("v2".into()), b.digest.clone())
        ]
    );
}

#[tokio::test]
async fn untagged_and_child_pushes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = with_config(tmp.path().to_path_buf());
    let s = store();
    let (a, b, c) = (image(1), image(2), image(3));

    // child: blob only
    s.manifest_put(&oref(&dir, ""), &a, true).await.unwrap();
    assert!(dir.join("oci-layout").exists());
    assert!(!dir.join("index.json").exists());
    assert!(s.blob_head(&oref(&dir, ""), &a.digest).await.unwrap());
    let by_digest = oref(&dir, &format!("@{}", a.digest));
    let got = s.manifest_get(&by_digest).await.unwrap();
    assert_eq!(got.media_type, media::OCI_MANIFEST);
    assert_eq!(
        s.manifest_head(&by_digest).await.unwrap().unwrap(),
        a.descriptor()
    );
    s.manifest_put(&oref(&dir, ":child"), &c, true)
        .await
        .unwrap();
    assert!(!dir.join("index.json").exists());

    // untagged non-child: entry without ref name, once
    let by_b = oref(&dir, &format!("@{}", b.digest));
    s.manifest_put(&by_b, &b, false).await.unwrap();
    s.manifest_put(&by_b, &b, false).await.unwrap();
    let idx = index_of(&dir).await;
    assert_eq!(names(&idx), vec![(None, b.digest.clone())]);
    assert!(idx.manifests[0].annotations.as_ref().unwrap()[ANNOTATION_CREATED].len() >= 20);

    // tagging it replaces the untagged entry
    s.manifest_put(&oref(&dir, ":v1"), &b, false).await.unwrap();
    assert_eq!(
        names(&index_of(&dir).await),
        vec![(Some("v1".into()), b.digest.clone())]
    );
    // an untagged push of a digest already listed (tagged) adds nothing
    s.manifest_put(&by_b, &b, false).await.unwrap();
    assert_eq!(index_of(&dir).await.manifests.len(), 1);

    // digest in the ref must match the manifest
    let e = s.manifest_put(&by_b, &a, false).await.unwrap_err();
    assert!(matches!(e, StoreError::DigestMismatch { .. }));
    assert!(s.tag_list_vec(&oref(&dir, "")).await.unwrap() == vec!["v1".to_string()]);
}

impl OciDirStore {
    async fn tag_list_vec(&self, r: &Reference) -> Result<Vec<String>, StoreError> {
        crate::store::tag_list_all(self, r).await
    }
}

#[tokio::test]
async fn tag_lookup_by_suffix_and_listing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = with_config(tmp.path().to_path_buf());
    let s = store();
    let mut idx = IndexFile::new();
    for (i, name) in ["docker.io/library/alpine:3", "b", "x:b", "a", "3"]
        .iter()
        .enumerate()
    {
        let m = image(i as u32);
        s.manifest_put(&oref(&dir, ""), &m, true).await.unwrap();
        let mut d = m.descriptor();
        d.annotations = Some(BTreeMap::from([(
            ANNOTATION_REF_NAME.to_string(),
            name.to_string(),
        )]));
        idx.manifests.push(d);
    }
    idx.manifests.push(image(9).descriptor()); // no ref name
    write_index(&s.gc, &dir, &idx).await.unwrap();

    // exact match wins over suffix match
    let g = s.manifest_get(&oref(&dir, ":3")).await.unwrap();
    assert_eq!(g.digest, image(4).digest);
    let g = s.manifest_get(&oref(&dir, ":b")).await.unwrap();
    assert_eq!(g.digest, image(1).digest);
    let mut idx2 = idx.clone();
    idx2.manifests.remove(4);
    write_index(&s.gc, &dir, &idx2).await.unwrap();
    let g = s.manifest_get(&oref(&dir, ":3")).await.unwrap();
    assert_eq!(g.digest, image(0).digest);
    write_index(&s.gc, &dir, &idx).await.unwrap();

    assert_eq!(
        s.tag_list_vec(&oref(&dir, "")).await.unwrap(),
        vec!["3", "a", "b"]
    );
}

#[tokio::test]
async fn blob_put_get_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new");
    let s = store();
    let r = oref(&dir, "");
    let data: &'static [u8] = b"hello, layout";
    let desc = Descriptor::new("application/octet-stream", Digest::sha256_of(data), 13);
    assert!(!s.blob_head(&r, &desc.digest).await.unwrap());
    s.blob_put(&r, &desc, bytes_stream(vec![b"hello", b", layout"]))
        .await
        .unwrap();
    assert!(s.blob_head(&r, &desc.digest).await.unwrap());
    assert_eq!(
        tokio::fs::read(blob_path(&dir, &desc.digest).unwrap())
            .await
            .unwrap(),
        data
    );
    assert_eq!(
        tokio::fs::read(dir.join("oci-layout")).await.unwrap(),
        LAYOUT_CONTENT
    );
    let got: Vec<Bytes> = s
        .blob_get(&r, &desc)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(got.concat(), data);

    // already present: success without reading the stream
    let never = futures::stream::once(async {
        panic!("stream must not be read");
        #[allow(unreachable_code)]
        Ok(Bytes::new())
    })
    .boxed();
    s.blob_put(&r, &desc, never).await.unwrap();

    // a corrupted file is caught on read
    tokio::fs::write(blob_path(&dir, &desc.digest).unwrap(), b"hello, layouT")
        .await
        .unwrap();
    let res: Result<Vec<Bytes>, _> = s.blob_get(&r, &desc).await.unwrap().try_collect().await;
    assert!(matches!(res, Err(StoreError::DigestMismatch { .. })));

    // missing blob
    let other = Descriptor::new("x", Digest::sha256_of(b"nope"), 4);
    assert!(s.blob_get(&r, &other).await.err().unwrap().is_not_found());

    // mount: only within the same layout
    assert!(s.blob_mount(&r, &r, &desc.digest).await.unwrap());
    let elsewhere = oref(&tmp.path().join("other"), "");
    assert!(!s.blob_mount(&elsewhere, &r, &desc.digest).await.unwrap());
    assert!(s.catalog(&r, mpsc::channel(1).0).await.is_err());
}

#[tokio::test]
async fn blob_put_mismatch_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let s = store();
    let r = oref(&dir, "");
    let desc = Descriptor::new("x", Digest::sha256_of(b"abcdef"), 6);

    let e = s
        .blob_put(&r, &desc, bytes_stream(vec![b"abc", b"deF"]))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::DigestMismatch { .. }), "{e}");
    let e = s
        .blob_put(&r, &desc, bytes_stream(vec![b"abc"]))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::ShortRead { .. }), "{e}");
    let e = s
        .blob_put(&r, &desc, bytes_stream(vec![b"abc", b"defg"]))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::SizeExceeded { .. }), "{e}");
    let failing = futures::stream::iter(vec![
        Ok(Bytes::from_static(b"ab")),
        Err(StoreError::Network {
            host: "h".into(),
            detail: "reset".into(),
        }),
    ])
    .boxed();
    let e = s.blob_put(&r, &desc, failing).await.unwrap_err();
    assert!(matches!(e, StoreError::Network { .. }), "{e}");

    assert!(!s.blob_head(&r, &desc.digest).await.unwrap());
    assert_eq!(files_under(&dir).await, vec!["oci-layout".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = with_config(tmp.path().join("shared"));
    let s = Arc::new(store());
    let mut tasks = Vec::new();
    for i in 0..24u32 {
        let s = s.clone();
        let dir = dir.clone();
        tasks.push(tokio::spawn(async move {
            let m = image(i);
            // every task also writes the same shared blob
            let desc = Descriptor::new("x", Digest::sha256_of(b"shared blob"), 11);
            s.blob_put(
                &oref(&dir, ""),
                &desc,
                bytes_stream(vec![b"shared", b" blob"]),
            )
            .await
            .unwrap();
            s.manifest_put(&oref(&dir, &format!(":t{i}")), &m, false)
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let idx = index_of(&dir).await;
    assert_eq!(idx.manifests.len(), 24);
    let tags = s.tag_list_vec(&oref(&dir, "")).await.unwrap();
    assert_eq!(tags.len(), 24);
    for i in 0..24u32 {
        let g = s
            .manifest_get(&oref(&dir, &format!(":t{i}")))
            .await
            .unwrap();
        assert_eq!(g.digest, image(i).digest);
    }
    // no temp files remain anywhere
    let files = files_under(&dir).await;
    assert!(files.iter().all(|f| !f.ends_with(".tmp")), "{files:?}");
    // oci-layout, index.json, 24 manifests, the shared blob, the config blob
    assert_eq!(files.len(), 2 + 24 + 1 + 1);
}

#[tokio::test]
async fn missing_layout_is_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("testmissing");
    let s = store();
    let e = s.manifest_get(&oref(&dir, ":v1")).await.unwrap_err();
    assert!(e.is_not_found());
    assert!(e.to_string().contains("oci-layout cannot be open"), "{e}");
    assert!(s
        .manifest_head(&oref(&dir, ":v1"))
        .await
        .unwrap_err()
        .is_not_found());
    let e = s.tag_list_vec(&oref(&dir, "")).await.unwrap_err();
    assert!(e.is_not_found() && e.to_string().contains("oci-layout cannot be open"));
    assert!(!s
        .blob_head(&oref(&dir, ""), &image(1).digest)
        .await
        .unwrap());
    assert!(!dir.exists(), "reads must not create the layout");

    // a bad layout version is rejected
    tokio::fs::create_dir_all(&dir).await.unwrap();
    tokio::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"2.0.0"}"#)
        .await
        .unwrap();
    let e = s.manifest_get(&oref(&dir, ":v1")).await.unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e}");
}

#[tokio::test]
async fn corrupt_manifest_blob_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = with_config(tmp.path().to_path_buf());
    let s = store();
    let m = image(1);
    s.manifest_put(&oref(&dir, ":v1"), &m, false).await.unwrap();
    tokio::fs::write(blob_path(&dir, &m.digest).unwrap(), b"{}")
        .await
        .unwrap();
    let e = s.manifest_get(&oref(&dir, ":v1")).await.unwrap_err();
    assert!(matches!(e, StoreError::DigestMismatch { .. }), "{e}");
}

#[test]
fn created_annotation_value() {
    assert_eq!(created_value(Some("0".into())), "1970-01-01T00:00:00Z");
    assert_eq!(
        created_value(Some("1700000000".into())),
        "2023-11-14T22:13:20Z"
    );
    let now = created_value(None);
    assert_eq!(now.len(), 20);
    assert_eq!(created_value(Some("garbage".into())).len(), 20);
}

#[test]
fn lock_keys_are_normalised() {
    assert_eq!(lock_key(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
    assert_eq!(lock_key(Path::new("x")), lock_key(Path::new("./x")));
}

#[test]
fn index_set_rules() {
    let d = |n: u32, tag: Option<&str>| {
        let mut d = image(n).descriptor();
        if let Some(t) = tag {
            d.annotations = Some(BTreeMap::from([(
                ANNOTATION_REF_NAME.to_string(),
                t.to_string(),
            )]));
        }
        d
    };
    let mut idx = IndexFile::new();
    idx.manifests = vec![
        d(1, None),
        d(2, Some("a")),
        d(1, Some("b")),
        d(3, Some("a")),
    ];
    // tag "a" with digest 1: first match is the untagged digest-1 entry → replaced,
    // later "a" entries removed, "b" kept
    assert!(idx.set(Some("a"), d(1, Some("a"))));
    assert_eq!(
        names(&idx),
        vec![
            (Some("a".into()), image(1).digest),
            (Some("b".into()), image(1).digest)
        ]
    );
    assert!(!idx.set(Some("a"), d(1, Some("a"))));
    assert!(!idx.set(None, d(1, None)));
    assert!(idx.set(None, d(4, None)));
    assert_eq!(idx.manifests.len(), 3);
    assert!(idx.set(Some("c"), d(5, Some("c"))));
    assert_eq!(idx.manifests.len(), 4);
}

#[tokio::test]
async fn pushing_a_referrer_maintains_the_fallback_index() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = with_config(tmp.path().join("refs"));
    let s = store();
    let subject = image(1);
    s.manifest_put(&oref(&dir, ":v1"), &subject, false)
        .await
        .unwrap();
    let referrer = |n: u32, at: Option<&str>| {
        let mut v = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": "application/example.config", "digest": Digest::sha256_of(b"{}"), "size": 2},
            "layers": [],
            "subject": subject.descriptor(),
            "annotations": {"n": n.to_string()},
        });
        if let Some(at) = at {
            v["artifactType"] = serde_json::json!(at);
        }
        Manifest::from_bytes(Bytes::from(serde_json::to_vec(&v).unwrap()), None)
    };
    let (r1, r2) = (
        referrer(1, Some("application/example.sbom")),
        referrer(2, None),
    );
    s.manifest_put(&oref(&dir, &format!("@{}", r1.digest)), &r1, true)
        .await
        .unwrap();
    s.manifest_put(&oref(&dir, &format!("@{}", r2.digest)), &r2, true)
        .await
        .unwrap();
    // pushing one again changes nothing
    s.manifest_put(&oref(&dir, &format!("@{}", r1.digest)), &r1, true)
        .await
        .unwrap();
    let listed = s.referrers(&oref(&dir, ""), &subject.digest).await.unwrap();
    let tag = crate::store::fallback_tag(&subject.digest);
    assert_eq!(listed.tags, vec![tag.clone()]);
    let got: Vec<(Digest, Option<String>)> = listed
        .descriptors
        .iter()
        .map(|d| (d.digest.clone(), d.artifact_type.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (r1.digest.clone(), Some("application/example.sbom".into())),
            // no artifactType: the config media type
            (r2.digest.clone(), Some("application/example.config".into())),
        ]
    );
    assert_eq!(
        listed.descriptors[1].annotations.as_ref().unwrap()["n"],
        "2"
    );
    // the index is a tagged entry; the referrers are not
    let idx = index_of(&dir).await;
    let tagged: Vec<Option<String>> = names(&idx).into_iter().map(|(n, _)| n).collect();
    assert_eq!(tagged, vec![Some("v1".to_string()), Some(tag)]);
    // no referrers: an empty list
    let none = s.referrers(&oref(&dir, ""), &r1.digest).await.unwrap();
    assert!(none.descriptors.is_empty() && none.tags.is_empty());
}

// ---- garbage collection (spec §10.4) ----

/// Put `data` as a blob; its descriptor.
async fn put_blob(s: &OciDirStore, dir: &Path, mt: &str, data: &[u8]) -> Descriptor {
    let desc = Descriptor::new(mt, Digest::sha256_of(data), data.len() as i64);
    let body =
        futures::stream::once(futures::future::ready(Ok(Bytes::copy_from_slice(data)))).boxed();
    s.blob_put(&oref(dir, ""), &desc, body).await.unwrap();
    desc
}

fn json_manifest(v: serde_json::Value) -> Manifest {
    Manifest::from_bytes(Bytes::from(serde_json::to_vec(&v).unwrap()), None)
}

/// An image with its own config, the given layers, and `data` as a unique layer; blobs put.
async fn put_image(s: &OciDirStore, dir: &Path, data: &str, shared: &[Descriptor]) -> Manifest {
    let config = put_blob(
        s,
        dir,
        "application/vnd.oci.image.config.v1+json",
        format!(r#"{{"c":"{data}"}}"#).as_bytes(),
    )
    .await;
    let mut layers = shared.to_vec();
    layers.push(
        put_blob(
            s,
            dir,
            "application/vnd.oci.image.layer.v1.tar",
            data.as_bytes(),
        )
        .await,
    );
    json_manifest(serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": config,
        "layers": layers,
    }))
}

fn blob_set(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("blobs/sha256"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn hexes<'a>(ds: impl IntoIterator<Item = &'a Digest>) -> BTreeSet<String> {
    ds.into_iter().map(|d| d.hex().to_string()).collect()
}

fn links_of(m: &Manifest) -> Vec<Digest> {
    m.links()
        .unwrap()
        .blobs
        .into_iter()
        .map(|d| d.digest)
        .collect()
}

#[tokio::test]
async fn gc_after_tag_overwrite_keeps_only_reachable_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("gc");
    let s = store();
    let r = oref(&dir, ":v1");
    let shared = put_blob(
        &s,
        &dir,
        "application/vnd.oci.image.layer.v1.tar",
        b"shared",
    )
    .await;

    // v1 = image A; "multi" = an index over image C with one absent (sparse) child;
    // a subject-less referrer index listing an artifact manifest with `blobs`
    s.open(&r).await;
    let a = put_image(&s, &dir, "a-unique", std::slice::from_ref(&shared)).await;
    s.manifest_put(&r, &a, false).await.unwrap();
    let c = put_image(&s, &dir, "c-unique", &[]).await;
    s.manifest_put(&oref(&dir, ""), &c, true).await.unwrap();
    let missing = image(77).descriptor();
    let idx = json_manifest(serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [c.descriptor(), missing],
    }));
    s.manifest_put(&oref(&dir, ":multi"), &idx, false)
        .await
        .unwrap();
    let art_blob = put_blob(&s, &dir, "text/plain", b"signature").await;
    let art = json_manifest(serde_json::json!({
        "mediaType": media::OCI_ARTIFACT,
        "artifactType": "application/example",
        "blobs": [art_blob],
    }));
    s.manifest_put(&oref(&dir, ""), &art, true).await.unwrap();
    let referrers = json_manifest(serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [art.descriptor()],
    }));
    let fallback = format!(":sha256-{}", a.digest.hex());
    s.manifest_put(&oref(&dir, &fallback), &referrers, false)
        .await
        .unwrap();
    s.close(&r).await.unwrap();
    let before = blob_set(&dir);
    assert_eq!(before.len(), 11, "{before:?}");

    // overwrite v1 with B (shares one layer with A)
    s.open(&r).await;
    let b = put_image(&s, &dir, "b-unique", std::slice::from_ref(&shared)).await;
    s.manifest_put(&r, &b, false).await.unwrap();
    assert_eq!(blob_set(&dir).len(), 14, "nothing deleted while held");
    s.close(&r).await.unwrap();

    let mut gone = hexes([&a.digest]);
    gone.extend(hexes(&links_of(&a)));
    gone.remove(shared.digest.hex());
    assert_eq!(gone.len(), 3);
    let mut want = before.clone();
    want.retain(|h| !gone.contains(h));
    want.insert(b.digest.hex().to_string());
    want.extend(hexes(&links_of(&b)));
    assert_eq!(blob_set(&dir), want);
    assert!(want.contains(shared.digest.hex()));
    assert!(want.contains(art_blob.digest.hex()));
    assert_eq!(
        s.manifest_get(&r).await.unwrap().digest,
        b.digest,
        "the layout stays readable"
    );

    // a second close with nothing modified does nothing, even with new garbage on disk
    let stray = dir
        .join("blobs/sha256")
        .join(Digest::sha256_of(b"stray").hex());
    std::fs::write(&stray, b"stray").unwrap();
    s.open(&r).await;
    s.close(&r).await.unwrap();
    assert!(stray.exists());
}

#[tokio::test]
async fn gc_waits_for_the_last_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = with_config(tmp.path().join("held"));
    let s = store();
    let (r1, r2) = (oref(&dir, ":v1"), oref(&dir, ":v2"));
    s.manifest_put(&r1, &image(1), false).await.unwrap();
    s.manifest_put(&r2, &image(2), false).await.unwrap();
    s.open(&r1).await;
    s.open(&oref(&dir.join("."), ":v2")).await; // same layout, other spelling
    s.manifest_put(&r1, &image(3), false).await.unwrap();
    s.close(&r1).await.unwrap();
    assert!(
        blob_set(&dir).contains(image(1).digest.hex()),
        "held by the other copy"
    );
    s.close(&r2).await.unwrap();
    let left = blob_set(&dir);
    assert!(!left.contains(image(1).digest.hex()));
    assert!(left.contains(image(2).digest.hex()) && left.contains(image(3).digest.hex()));
    // a close without an open on an idle, unmodified layout is harmless
    s.close(&r1).await.unwrap();
    assert_eq!(blob_set(&dir), left);
}

/// Two stores in one process (two engines) keep their own layout bookkeeping: a copy
/// one of them holds open does not defer the other's garbage collection.
#[tokio::test]
async fn two_stores_do_not_share_layout_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = with_config(tmp.path().join("two"));
    let (a, b) = (store(), store());
    let r = oref(&dir, ":v1");
    b.manifest_put(&r, &image(1), false).await.unwrap();
    a.open(&r).await;
    b.open(&r).await;
    b.manifest_put(&r, &image(2), false).await.unwrap();
    b.close(&r).await.unwrap();
    let left = blob_set(&dir);
    assert!(
        !left.contains(image(1).digest.hex()),
        "collected by its own store's last close"
    );
    assert!(left.contains(image(2).digest.hex()));
    a.close(&r).await.unwrap();
}

#[tokio::test]
async fn gc_spares_fresh_temp_files_and_in_flight_digests() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = with_config(tmp.path().join("tmpfiles"));
    let s = store();
    let r = oref(&dir, ":v1");
    s.manifest_put(&r, &image(1), false).await.unwrap();
    let blobs = dir.join("blobs/sha256");
    let writing = Digest::sha256_of(b"being written");
    let fresh = blobs.join(format!("{}.0123456789abcdef.tmp", writing.hex()));
    std::fs::write(&fresh, b"partial").unwrap();
    let foreign = blobs.join("upload-1234");
    std::fs::write(&foreign, b"another tool").unwrap();
    let old = blobs.join(format!(
        "{}.fedcba9876543210.tmp",
        Digest::sha256_of(b"x").hex()
    ));
    let f = std::fs::File::create(&old).unwrap();
    f.set_modified(std::time::SystemTime::now() - 2 * gc::TEMP_MAX_AGE)
        .unwrap();
    drop(f);
    // a finished, unreferenced blob whose digest is still held by a writer of this process
    let held = Digest::sha256_of(b"held");
    std::fs::write(blobs.join(held.hex()), b"held").unwrap();
    let guard = s.gc.in_flight(&lock_key(&dir), &held);

    s.open(&r).await;
    s.manifest_put(&r, &image(2), false).await.unwrap();
    s.close(&r).await.unwrap();
    assert!(
        fresh.exists() && foreign.exists(),
        "fresh temp files survive"
    );
    assert!(!old.exists(), "stale temp files go");
    assert!(blobs.join(held.hex()).exists(), "in-flight digest kept");
    assert!(!blobs.join(image(1).digest.hex()).exists());

    drop(guard);
    s.open(&r).await;
    s.manifest_put(&r, &image(3), false).await.unwrap();
    s.close(&r).await.unwrap();
    assert!(!blobs.join(held.hex()).exists());
    assert!(fresh.exists());
}

#[tokio::test]
async fn gc_deletes_nothing_when_a_manifest_is_unreadable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = with_config(tmp.path().join("broken"));
    let s = store();
    let r = oref(&dir, ":v1");
    s.manifest_put(&r, &image(1), false).await.unwrap();
    s.manifest_put(&oref(&dir, ":v2"), &image(2), false)
        .await
        .unwrap();
    // v2's manifest is corrupted on disk; v1 is overwritten (image 1 becomes garbage)
    std::fs::write(blob_path(&dir, &image(2).digest).unwrap(), b"{}").unwrap();
    s.open(&r).await;
    s.manifest_put(&r, &image(3), false).await.unwrap();
    s.close(&r).await.unwrap();
    assert!(blob_set(&dir).contains(image(1).digest.hex()));

    // an index entry whose manifest is missing also stops GC
    std::fs::remove_file(blob_path(&dir, &image(2).digest).unwrap()).unwrap();
    s.open(&r).await;
    s.close(&r).await.unwrap();
    assert!(blob_set(&dir).contains(image(1).digest.hex()));

    // repaired: the (still pending) collection goes ahead on the next close
    s.manifest_put(&oref(&dir, ":v2"), &image(4), false)
        .await
        .unwrap();
    s.open(&r).await;
    s.close(&r).await.unwrap();
    assert!(!blob_set(&dir).contains(image(1).digest.hex()));
    assert!(blob_set(&dir).contains(image(4).digest.hex()));
}
#[tokio::test]
async fn a_manifest_over_a_missing_blob_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("strict");
    let s = store();
    let m = image(1);
    let config = Digest::sha256_of(b"{}");
    let e = s
        .manifest_put(&oref(&dir, ":v1"), &m, false)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(config.as_str()) && text.contains(m.digest.as_str()),
        "{text}"
    );
    assert!(!dir.join("index.json").exists());
    assert!(!blob_path(&dir, &m.digest).unwrap().exists());
    // as a child too
    assert!(s.manifest_put(&oref(&dir, ""), &m, true).await.is_err());
    // once the blob is there, it is accepted
    let dir = with_config(dir);
    s.manifest_put(&oref(&dir, ":v1"), &m, false).await.unwrap();
    // an index is not held to its children (`platforms` leaves some out on purpose)
    let index = Manifest::from_bytes(
        Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{}","size":9}}]}}"#,
            media::OCI_INDEX,
            media::OCI_MANIFEST,
            Digest::sha256_of(b"absent child")
        )),
        None,
    );
    s.manifest_put(&oref(&dir, ":multi"), &index, false)
        .await
        .unwrap();
}
