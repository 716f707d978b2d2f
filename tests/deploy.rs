//! The deploy files (operations issue, "Deploy files"), checked against the real binary and
//! the real tools: every Kubernetes manifest parses and names itself; the kustomizations list
//! files that exist and together cover every manifest; the args each container gets start the
//! binary (a `server` with the Deployment's args answers its probes, the Service's port and
//! the ServiceMonitor's path; the CronJob's `once` mirrors and exits 0), with the ConfigMap's
//! config accepted by `regsync config`; every metric the Grafana dashboard queries is a family
//! a running server declares; the systemd unit passes `systemd-analyze verify`, carries its
//! hardening and its `ExecStart` runs; the Dockerfile builds the cargo binary from files that
//! exist into a non-root image whose entry point is `regsync`.
//!
//! Servers listen on 127.0.0.1 only; the mirrored images are the OCI layout shipped in
//! `config-examples/quickstart/hello`, copied into a temp dir.

mod common;

use serde::Deserialize;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_regsync");

/// regsync's default `--shutdown-timeout` (`src/cli.rs`): what a stop timeout must exceed.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Measured RSS of a release build (README, "Benchmarks and soaks": 17 MiB for a server after
/// 300 cycles, 22 MiB peak for a catalog copy); a memory request must cover it.
const MEASURED_RSS: u64 = 22 * 1024 * 1024;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy() -> PathBuf {
    repo().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fail_all(what: &str, errors: &[String]) {
    assert!(errors.is_empty(), "{what}:\n  {}", errors.join("\n  "));
}

// ---------------------------------------------------------------------------------------------
// Kubernetes manifests

/// Every `*.yaml`/`*.yml` under `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(yaml_files(&p));
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The documents of a YAML file (`---` separated; empty documents left out).
fn docs_of(file: &Path) -> Vec<Yaml> {
    let text = read(file);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            Yaml::deserialize(d).unwrap_or_else(|e| panic!("{}: not YAML: {e}", file.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn str_of(v: &Yaml) -> Option<&str> {
    v.as_str()
}

fn kind(v: &Yaml) -> &str {
    v["kind"].as_str().unwrap_or("")
}

fn name(v: &Yaml) -> &str {
    v["metadata"]["name"].as_str().unwrap_or("")
}

/// The objects `kubectl apply -k dir` creates: the `resources` of its kustomization.yaml,
/// files or directories with their own kustomization, recursively. Only `resources` is
/// resolved, so a kustomization with anything else (patches, generators) fails here.
fn build(dir: &Path) -> Vec<Yaml> {
    let kfile = dir.join("kustomization.yaml");
    assert!(kfile.is_file(), "{}: no kustomization.yaml", dir.display());
    let docs = docs_of(&kfile);
    assert_eq!(docs.len(), 1, "{}", kfile.display());
    let k = &docs[0];
    let keys: BTreeSet<&str> = k
        .as_mapping()
        .unwrap()
        .keys()
        .filter_map(|k| k.as_str())
        .collect();
    let known: BTreeSet<&str> = ["apiVersion", "kind", "metadata", "resources"].into();
    assert!(
        keys.is_subset(&known),
        "{}: this test resolves `resources` only, found {keys:?}",
        kfile.display()
    );
    assert_eq!(kind(k), "Kustomization", "{}", kfile.display());
    let mut out = Vec::new();
    for r in k["resources"].as_sequence().unwrap_or(&Vec::new()) {
        let r = r
            .as_str()
            .unwrap_or_else(|| panic!("{}: {r:?}", kfile.display()));
        let p = dir.join(r);
        if p.is_dir() {
            out.extend(build(&p));
        } else {
            assert!(
                p.is_file(),
                "{}: resource {r} does not exist",
                kfile.display()
            );
            out.extend(docs_of(&p));
        }
    }
    out
}

/// The files `build(dir)` reads (canonical paths), kustomization.yaml files included.
fn files_read_by(dir: &Path, out: &mut BTreeSet<PathBuf>) {
    let kfile = dir.join("kustomization.yaml");
    out.insert(kfile.canonicalize().unwrap());
    for r in docs_of(&kfile)[0]["resources"]
        .as_sequence()
        .unwrap_or(&Vec::new())
    {
        let p = dir.join(r.as_str().unwrap());
        if p.is_dir() {
            files_read_by(&p, out);
        } else if p.is_file() {
            out.insert(p.canonicalize().unwrap());
        }
    }
}

fn base() -> Vec<Yaml> {
    build(&deploy().join("kubernetes"))
}

fn cronjob_variant() -> Vec<Yaml> {
    build(&deploy().join("kubernetes/cronjob"))
}

/// The one object of `kind` in `objs`.
fn one<'a>(objs: &'a [Yaml], k: &str) -> &'a Yaml {
    let found: Vec<&Yaml> = objs.iter().filter(|o| kind(o) == k).collect();
    assert_eq!(found.len(), 1, "expected one {k}, found {}", found.len());
    found[0]
}

fn sharded_cronjob_variant() -> Vec<Yaml> {
    build(&deploy().join("kubernetes/sharded-cronjob"))
}

fn sharded_server_variant() -> Vec<Yaml> {
    build(&deploy().join("kubernetes/sharded-server"))
}

fn sharded_cronjob() -> Yaml {
    one(&sharded_cronjob_variant(), "CronJob").clone()
}

fn statefulset() -> Yaml {
    one(&sharded_server_variant(), "StatefulSet").clone()
}

fn deployment() -> Yaml {
    one(&base(), "Deployment").clone()
}

fn cronjob() -> Yaml {
    one(&cronjob_variant(), "CronJob").clone()
}

fn deployment_pod(d: &Yaml) -> &Yaml {
    &d["spec"]["template"]["spec"]
}

fn cronjob_pod(c: &Yaml) -> &Yaml {
    &c["spec"]["jobTemplate"]["spec"]["template"]["spec"]
}

/// The pod's only container.
fn container(pod: &Yaml) -> &Yaml {
    let cs = pod["containers"].as_sequence().expect("containers");
    assert_eq!(cs.len(), 1, "one container expected");
    &cs[0]
}

fn strings(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|s| match s {
            Yaml::String(s) => s.clone(),
            other => panic!("not a string: {other:?}"),
        })
        .collect()
}

/// The container's command line after the entry point (`command` would replace `regsync`).
fn args(c: &Yaml) -> Vec<String> {
    assert!(
        c["command"].is_null(),
        "the container keeps the image's ENTRYPOINT"
    );
    strings(&c["args"])
}

/// The value of `-c`/`--config` in a regsync command line.
fn flag_value(args: &[String], names: &[&str]) -> Option<String> {
    for (i, a) in args.iter().enumerate() {
        for n in names {
            if a == n {
                return args.get(i + 1).cloned();
            }
            if let Some(v) = a.strip_prefix(&format!("{n}=")) {
                return Some(v.to_string());
            }
        }
    }
    None
}

/// `args` with the config file replaced by `config`, a `--state` file moved into the folder
/// `state` beside it (same file name), and a `--listen` address moved to 127.0.0.1 on a free
/// port; also the port it asked for.
fn adapt(args: &[String], config: &Path) -> (Vec<String>, Option<u16>) {
    let mut out = Vec::new();
    let mut port = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-c" | "--config" => {
                it.next().expect("a value after -c");
                out.extend([a.clone(), config.display().to_string()]);
            }
            "--state" => {
                let file = it.next().expect("a value after --state");
                let name = Path::new(file).file_name().expect("a file name");
                let dir = config.with_file_name("state");
                out.extend([a.clone(), dir.join(name).display().to_string()]);
            }
            "--listen" => {
                let addr = it.next().expect("a value after --listen");
                let (_, p) = addr.rsplit_once(':').expect("host:port");
                port = Some(p.parse().expect("a port number"));
                out.extend([a.clone(), "127.0.0.1:0".to_string()]);
            }
            _ => out.push(a.clone()),
        }
    }
    (out, port)
}

/// A named or numbered container port, as a number.
fn resolve_port(c: &Yaml, port: &Yaml) -> Option<u64> {
    if let Some(n) = port.as_u64() {
        return Some(n);
    }
    let want = port.as_str()?;
    c["ports"]
        .as_sequence()?
        .iter()
        .find(|p| p["name"].as_str() == Some(want))
        .and_then(|p| p["containerPort"].as_u64())
}

/// `64Mi`, `1Gi`, `500M`, `1024` in bytes.
fn quantity(q: &Yaml) -> Option<u64> {
    let s = match q {
        Yaml::Number(n) => return n.as_u64(),
        Yaml::String(s) => s.as_str(),
        _ => return None,
    };
    let units: [(&str, u64); 6] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (u, m) in units {
        if let Some(n) = s.strip_suffix(u) {
            return n.parse::<u64>().ok().map(|n| n * m);
        }
    }
    s.parse().ok()
}

/// `labels` has every key/value of `want`.
fn labels_match(want: &Yaml, labels: &Yaml) -> bool {
    let (Some(want), Some(labels)) = (want.as_mapping(), labels.as_mapping()) else {
        return false;
    };
    !want.is_empty() && want.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn every_manifest_parses_and_names_itself() {
    let files = yaml_files(&deploy().join("kubernetes"));
    assert!(files.len() >= 8, "{files:?}");
    let mut errors = Vec::new();
    let mut kinds = BTreeSet::new();
    for f in &files {
        let docs = docs_of(f);
        if docs.is_empty() {
            errors.push(format!("{}: no document", f.display()));
        }
        for d in &docs {
            for (what, v) in [
                ("apiVersion", &d["apiVersion"]),
                ("kind", &d["kind"]),
                ("metadata.name", &d["metadata"]["name"]),
            ] {
                if str_of(v).is_none_or(|s| s.is_empty()) {
                    errors.push(format!("{}: no {what}", f.display()));
                }
            }
            kinds.insert((
                d["apiVersion"].as_str().unwrap_or("").to_string(),
                kind(d).to_string(),
            ));
        }
    }
    fail_all("manifests", &errors);
    for want in [
        ("v1", "ConfigMap"),
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("batch/v1", "CronJob"),
        ("apps/v1", "StatefulSet"),
        ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
    ] {
        assert!(
            kinds.contains(&(want.0.to_string(), want.1.to_string())),
            "no {want:?} among {kinds:?}"
        );
    }
}

/// `kubectl apply -k deploy/kubernetes` creates the server and its monitoring, `-k
/// deploy/kubernetes/cronjob` the scheduled variant with the same ConfigMap; every manifest
/// in the folder is part of one of them.
#[test]
fn kustomizations_list_existing_files_and_cover_every_manifest() {
    let kinds = |objs: &[Yaml]| -> Vec<String> {
        let mut v: Vec<String> = objs.iter().map(|o| kind(o).to_string()).collect();
        v.sort();
        v
    };
    let b = base();
    assert_eq!(
        kinds(&b),
        [
            "ConfigMap",
            "Deployment",
            "PersistentVolumeClaim",
            "Service",
            "ServiceMonitor"
        ]
    );
    let c = cronjob_variant();
    assert_eq!(kinds(&c), ["ConfigMap", "CronJob"]);
    assert_eq!(one(&b, "ConfigMap"), one(&c, "ConfigMap"));
    let sc = sharded_cronjob_variant();
    assert_eq!(kinds(&sc), ["ConfigMap", "CronJob"]);
    let ss = sharded_server_variant();
    assert_eq!(
        kinds(&ss),
        ["ConfigMap", "Service", "ServiceMonitor", "StatefulSet"]
    );
    for v in [&sc, &ss] {
        assert_eq!(one(&b, "ConfigMap"), one(v, "ConfigMap"));
    }
    for objs in [&b, &c, &sc, &ss] {
        let mut seen = BTreeSet::new();
        for o in objs.iter() {
            assert!(
                seen.insert((kind(o), name(o))),
                "twice: {} {}",
                kind(o),
                name(o)
            );
        }
    }

    let k8s = deploy().join("kubernetes");
    let mut read_by = BTreeSet::new();
    files_read_by(&k8s, &mut read_by);
    files_read_by(&k8s.join("cronjob"), &mut read_by);
    files_read_by(&k8s.join("sharded-cronjob"), &mut read_by);
    files_read_by(&k8s.join("sharded-server"), &mut read_by);
    let orphans: Vec<PathBuf> = yaml_files(&k8s)
        .into_iter()
        .filter(|f| !read_by.contains(&f.canonicalize().unwrap()))
        .collect();
    assert!(orphans.is_empty(), "in no kustomization: {orphans:?}");
}

/// Both workloads: one replica / no overlapping runs, non-root, read-only root file system,
/// no privilege escalation, no capability, memory sized from the measured RSS, time to stop
/// after SIGTERM, the ConfigMap mounted where `-c` reads it, and every `{{ env }}` of the
/// config set from the Secret (no literal secret anywhere).
#[test]
fn workloads_are_locked_down_and_wired_to_the_config() {
    let d = deployment();
    let c = cronjob();
    let mut errors = Vec::new();
    let mut err = |what: &str, ok: bool| {
        if !ok {
            errors.push(what.to_string());
        }
    };
    err(
        "Deployment: replicas 1",
        d["spec"]["replicas"].as_u64() == Some(1),
    );
    err(
        "CronJob: concurrencyPolicy Forbid",
        c["spec"]["concurrencyPolicy"].as_str() == Some("Forbid"),
    );
    err(
        "CronJob: restartPolicy Never or OnFailure",
        matches!(
            cronjob_pod(&c)["restartPolicy"].as_str(),
            Some("Never" | "OnFailure")
        ),
    );
    err(
        "Deployment: selector matches the pod labels",
        labels_match(
            &d["spec"]["selector"]["matchLabels"],
            &d["spec"]["template"]["metadata"]["labels"],
        ),
    );

    let configmaps: Vec<Yaml> = base()
        .into_iter()
        .filter(|o| kind(o) == "ConfigMap")
        .collect();
    let config_text = configmap_config();
    let env_used = env_templates(&config_text);
    assert!(!env_used.is_empty(), "the config reads no credentials");

    let sc = sharded_cronjob();
    let ss = statefulset();
    for (what, pod) in [
        ("Deployment", deployment_pod(&d)),
        ("CronJob", cronjob_pod(&c)),
        ("sharded CronJob", cronjob_pod(&sc)),
        ("StatefulSet", deployment_pod(&ss)),
    ] {
        let ct = container(pod);
        let psc = &pod["securityContext"];
        let csc = &ct["securityContext"];
        let pick = |k: &str| {
            if csc[k].is_null() {
                psc[k].clone()
            } else {
                csc[k].clone()
            }
        };
        let mut err = |why: &str, ok: bool| {
            if !ok {
                errors.push(format!("{what}: {why}"));
            }
        };
        err(
            "runAsNonRoot true",
            pick("runAsNonRoot").as_bool() == Some(true),
        );
        err(
            "runAsUser numeric, not 0",
            pick("runAsUser").as_u64().is_some_and(|u| u > 0),
        );
        err(
            "runAsUser is the image's USER",
            pick("runAsUser").as_u64() == Some(dockerfile_uid()),
        );
        err(
            "readOnlyRootFilesystem true",
            csc["readOnlyRootFilesystem"].as_bool() == Some(true),
        );
        err(
            "allowPrivilegeEscalation false",
            csc["allowPrivilegeEscalation"].as_bool() == Some(false),
        );
        err(
            "capabilities drop ALL",
            strings(&csc["capabilities"]["drop"]).contains(&"ALL".to_string()),
        );
        err(
            "capabilities add nothing",
            csc["capabilities"]["add"].is_null(),
        );
        err("no privileged", csc["privileged"].as_bool() != Some(true));
        let req = quantity(&ct["resources"]["requests"]["memory"]);
        let lim = quantity(&ct["resources"]["limits"]["memory"]);
        err(
            "memory request covers the measured RSS",
            req.is_some_and(|r| r >= MEASURED_RSS),
        );
        err(
            "memory limit at least the request, under 1 GiB",
            lim.is_some_and(|l| Some(l) >= req && l <= 1 << 30),
        );
        err(
            "a cpu request",
            !ct["resources"]["requests"]["cpu"].is_null(),
        );
        err(
            "terminationGracePeriodSeconds longer than --shutdown-timeout",
            pod["terminationGracePeriodSeconds"]
                .as_u64()
                .is_some_and(|s| s > SHUTDOWN_TIMEOUT.as_secs()),
        );
        err(
            "image is set",
            ct["image"].as_str().is_some_and(|s| !s.is_empty()),
        );

        // The config file -c names is the ConfigMap's config.yaml, mounted read-only.
        let a = args(ct);
        let cfg = flag_value(&a, &["-c", "--config"]).unwrap_or_default();
        let mount = ct["volumeMounts"]
            .as_sequence()
            .unwrap_or(&Vec::new())
            .iter()
            .find(|m| {
                m["mountPath"]
                    .as_str()
                    .is_some_and(|p| cfg.starts_with(&format!("{}/", p.trim_end_matches('/'))))
            })
            .cloned();
        let Some(mount) = mount else {
            err(&format!("no volume mounted over {cfg:?}"), false);
            continue;
        };
        err(
            "the config mount is readOnly",
            mount["readOnly"].as_bool() == Some(true),
        );
        let file = &cfg[mount["mountPath"]
            .as_str()
            .unwrap()
            .trim_end_matches('/')
            .len()
            + 1..];
        let volume = pod["volumes"]
            .as_sequence()
            .unwrap_or(&Vec::new())
            .iter()
            .find(|v| v["name"] == mount["name"])
            .cloned()
            .unwrap_or(Yaml::Null);
        let cm_name = volume["configMap"]["name"].as_str().unwrap_or("");
        let key = match volume["configMap"]["items"].as_sequence() {
            Some(items) => items
                .iter()
                .find(|i| i["path"].as_str() == Some(file))
                .and_then(|i| i["key"].as_str())
                .unwrap_or("")
                .to_string(),
            None => file.to_string(),
        };
        err(
            &format!("-c {cfg} is key {key:?} of ConfigMap {cm_name:?} with the config"),
            configmaps.iter().any(|cm| {
                name(cm) == cm_name && cm["data"][key.as_str()].as_str() == Some(&config_text)
            }),
        );
        // Every variable the config reads comes from the Secret; nothing secret is literal.
        let env: BTreeMap<String, Yaml> = ct["env"]
            .as_sequence()
            .unwrap_or(&Vec::new())
            .iter()
            .map(|e| (e["name"].as_str().unwrap_or("").to_string(), e.clone()))
            .collect();
        for v in &env_used {
            err(
                &format!("env {v} from a secretKeyRef"),
                env.get(v)
                    .is_some_and(|e| !e["valueFrom"]["secretKeyRef"]["name"].is_null()),
            );
        }
        for (n, e) in &env {
            let secretish = ["PASS", "TOKEN", "SECRET", "KEY"]
                .iter()
                .any(|w| n.to_uppercase().contains(w));
            err(
                &format!("env {n} has no literal secret value"),
                !secretish || e["value"].is_null(),
            );
        }
    }
    fail_all("workloads", &errors);
}

/// The ConfigMap's `config.yaml`.
/// The servers keep a state database (README "State database": pruning records, last runs)
/// on a volume that outlives the pod: `--state` names a file on a writable mount whose
/// volume is a PersistentVolumeClaim (the Deployment's, in the base) or a volumeClaimTemplate
/// (the StatefulSet's: one database per shard), ReadWriteOnce with a small storage request;
/// the Deployment recreates its pod rather than rolling (a RWO claim holds one pod).
#[test]
fn servers_keep_their_state_file_on_a_persistent_writable_volume() {
    let b = base();
    let d = deployment();
    let ss = statefulset();
    let mut errors = Vec::new();
    if d["spec"]["strategy"]["type"].as_str() != Some("Recreate") {
        errors.push("Deployment: strategy Recreate (its claim is ReadWriteOnce)".to_string());
    }
    let base_claims: Vec<Yaml> = b
        .iter()
        .filter(|o| kind(o) == "PersistentVolumeClaim")
        .cloned()
        .collect();
    let templates: Vec<Yaml> = ss["spec"]["volumeClaimTemplates"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    for (what, pod, claims, templated) in [
        ("Deployment", deployment_pod(&d), &base_claims, false),
        ("StatefulSet", deployment_pod(&ss), &templates, true),
    ] {
        let mut err = |why: String| errors.push(format!("{what}: {why}"));
        let ct = container(pod);
        let a = args(ct);
        let Some(state) = flag_value(&a, &["--state"]) else {
            err(format!("no --state in {a:?}"));
            continue;
        };
        if !state.starts_with('/') {
            err(format!("--state {state} is not absolute"));
        }
        let mount = ct["volumeMounts"]
            .as_sequence()
            .unwrap_or(&Vec::new())
            .iter()
            .find(|m| {
                m["mountPath"].as_str().is_some_and(|p| {
                    Path::new(&state).parent() == Some(Path::new(p.trim_end_matches('/')))
                })
            })
            .cloned();
        let Some(mount) = mount else {
            err(format!(
                "no volume mounted at the folder of --state {state}"
            ));
            continue;
        };
        if mount["readOnly"].as_bool() == Some(true) {
            err(format!("the mount of {state} is readOnly"));
        }
        if !mount["subPath"].is_null() {
            err("the state mount has a subPath (the WAL files need the folder)".to_string());
        }
        let vname = mount["name"].as_str().unwrap_or("");
        let volume = pod["volumes"]
            .as_sequence()
            .unwrap_or(&Vec::new())
            .iter()
            .find(|v| v["name"].as_str() == Some(vname))
            .cloned();
        let claim_name = if templated {
            if volume.is_some() {
                err(format!(
                    "{vname} is a pod volume, not a volumeClaimTemplate"
                ));
            }
            vname.to_string()
        } else {
            match volume {
                Some(v) => v["persistentVolumeClaim"]["claimName"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                None => String::new(),
            }
        };
        let Some(claim) = claims.iter().find(|c| name(c) == claim_name) else {
            err(format!(
                "volume {vname:?} is no PersistentVolumeClaim of the kustomization \
                 (claim {claim_name:?})"
            ));
            continue;
        };
        if !strings(&claim["spec"]["accessModes"]).contains(&"ReadWriteOnce".to_string()) {
            err(format!("claim {claim_name}: accessModes ReadWriteOnce"));
        }
        let size = quantity(&claim["spec"]["resources"]["requests"]["storage"]);
        if size.is_none_or(|s| s == 0 || s > 10 << 30) {
            err(format!(
                "claim {claim_name}: a small storage request (found {size:?})"
            ));
        }
    }
    if !templated_claims_named(&templates) {
        errors.push("StatefulSet: every volumeClaimTemplate has a name".to_string());
    }
    fail_all("state volumes", &errors);
}

fn templated_claims_named(templates: &[Yaml]) -> bool {
    templates.iter().all(|t| {
        t["metadata"]["name"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
    })
}

fn configmap_config() -> String {
    let b = base();
    let cm = one(&b, "ConfigMap");
    cm["data"]["config.yaml"]
        .as_str()
        .expect("ConfigMap data config.yaml")
        .to_string()
}

/// The variables a config's templates read with `env "NAME"`.
fn env_templates(config: &str) -> BTreeSet<String> {
    let re = fancy_regex::Regex::new(r#"\benv\s+"([A-Za-z_][A-Za-z0-9_]*)""#).unwrap();
    re.captures_iter(config)
        .map(|c| c.unwrap()[1].to_string())
        .collect()
}

/// `regsync config` loads the ConfigMap's config with the Secret's variables set (to
/// placeholders) and with the optional ones missing; its credentials are templates only.
#[test]
fn configmap_config_loads_with_the_binary() {
    let text = configmap_config();
    let cfg: Yaml = serde_yaml::from_str(&text).expect("config.yaml is YAML");
    let creds = cfg["creds"].as_sequence().expect("creds");
    assert!(!creds.is_empty());
    for c in creds {
        for k in ["user", "pass", "token"] {
            if let Some(v) = c[k].as_str() {
                assert!(
                    v.is_empty() || v.contains("{{"),
                    "creds {}: {k} is a literal, not a template",
                    c["registry"].as_str().unwrap_or("?")
                );
            }
        }
    }
    let steps = cfg["sync"].as_sequence().expect("sync");
    assert!(!steps.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, &text).unwrap();
    let vars = env_templates(&text);
    let d = deployment();
    let env = &container(deployment_pod(&d))["env"];
    let optional: BTreeSet<String> = env
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|e| e["valueFrom"]["secretKeyRef"]["optional"].as_bool() == Some(true))
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    let run = |set: &dyn Fn(&str) -> bool| {
        let mut cmd = Command::new(BIN);
        cmd.args(["config", "-c"])
            .arg(&path)
            .env_clear()
            .env("HOME", dir.path());
        for v in vars.iter().filter(|v| set(v)) {
            cmd.env(v, format!("placeholder-{}", v.to_lowercase()));
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(&|_| true);
    assert_eq!(code, Some(0), "{stderr}");
    for s in steps {
        let src = s["source"].as_str().unwrap();
        assert!(stdout.contains(src), "{src} not in\n{stdout}");
    }
    let user = vars
        .iter()
        .find(|v| v.contains("USER"))
        .expect("a user variable");
    assert!(
        stdout.contains(&format!("placeholder-{}", user.to_lowercase())),
        "{user} was not filled in:\n{stdout}"
    );
    // The Secret may leave out the optional keys.
    let (code, _, stderr) = run(&|v| !optional.contains(v));
    assert_eq!(code, Some(0), "without {optional:?}: {stderr}");
}

// ---------------------------------------------------------------------------------------------
// Running the binary with the deploy files' command lines

/// A scratch directory: an OCI layout to mirror, a config mirroring it into `mirror/`, and
/// empty home, working and temp directories that must stay empty (the container's root file
/// system is read-only).
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(
            &repo().join("config-examples/quickstart/hello"),
            &dir.path().join("source/hello"),
        );
        // `state` stands for the volume the state file lies on (see `adapt`)
        for d in ["home", "work", "tmp", "state"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let cfg = format!(
            "version: 1\nsync:\n  - source: ocidir://{0}/source/hello\n    target: ocidir://{0}/mirror/hello\n    type: repository\n    interval: 1h\n",
            dir.path().display()
        );
        std::fs::write(dir.path().join("config.yaml"), cfg).unwrap();
        Scratch { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn config(&self) -> PathBuf {
        self.path("config.yaml")
    }

    /// When `run_args` pass `--state`: the file is an SQLite database the run wrote (the
    /// server opened it and recorded its step runs).
    fn assert_state_written(&self, run_args: &[String]) {
        let Some(state) = flag_value(run_args, &["--state"]) else {
            return;
        };
        assert!(
            state.starts_with(&self.path("state").display().to_string()),
            "{state}"
        );
        let head = std::fs::read(&state).unwrap_or_else(|e| panic!("{state}: {e}"));
        assert!(
            head.starts_with(b"SQLite format 3\0"),
            "{state} is not an SQLite file"
        );
    }

    /// `regsync <args>` with nothing of the test's environment: HOME and DOCKER_CONFIG as in
    /// the image (pointing at an empty directory), TMPDIR, and the working directory.
    fn command(&self, args: &[String]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.path("home"))
            .env("DOCKER_CONFIG", self.path("home/.docker"))
            .env("TMPDIR", self.path("tmp"))
            .current_dir(self.path("work"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// The tags mirrored into `mirror/hello` equal the source's, and nothing was written
    /// anywhere else.
    fn assert_mirrored(&self) {
        let tags = |p: &str| -> BTreeSet<String> {
            let index: Json = serde_json::from_str(&read(&self.path(p).join("index.json")))
                .unwrap_or_else(|e| panic!("{p}/index.json: {e}"));
            index["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|m| {
                    m["annotations"]["org.opencontainers.image.ref.name"]
                        .as_str()
                        .map(String::from)
                })
                .collect()
        };
        let want = tags("source/hello");
        assert!(!want.is_empty());
        assert_eq!(tags("mirror/hello"), want);
        for d in ["home", "work", "tmp"] {
            let left: Vec<_> = std::fs::read_dir(self.path(d))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            assert!(
                left.is_empty(),
                "regsync wrote outside its target: {left:?}"
            );
        }
    }
}

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

/// A running regsync with its stderr collected; SIGTERM then SIGKILL when dropped.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd.spawn().expect("spawn regsync");
        let (lines, reader) = common::run::collect_stderr(&mut child);
        Proc {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn stderr(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The address of the `Listening` line (text log format: `msg=Listening addr=HOST:PORT`).
    fn listen_addr(&mut self) -> String {
        let start = Instant::now();
        loop {
            let found = self.lines.lock().unwrap().iter().find_map(|l| {
                if !l.contains("msg=Listening") {
                    return None;
                }
                l.split_whitespace()
                    .find_map(|f| f.strip_prefix("addr=").map(String::from))
            });
            if let Some(a) = found {
                return a;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("regsync exited ({st}) before listening\n{}", self.stderr());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no Listening line\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: i32) {
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill({sig})");
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                assert!(!self.stderr().contains("panicked"), "{}", self.stderr());
                return st;
            }
            assert!(
                start.elapsed() < timeout,
                "regsync did not exit within {timeout:?}\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if self.child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET http://{addr}{path}` (HTTP/1.0, so the body ends with the connection).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: no status in {head:?}"));
    (code, body.to_string())
}

/// Polls `GET path` until it answers `want` (other answers must be `allowed`).
fn poll(addr: &str, path: &str, want: u16, allowed: &[u16]) -> String {
    let start = Instant::now();
    loop {
        let (code, body) = http_get(addr, path);
        if code == want {
            return body;
        }
        assert!(allowed.contains(&code), "GET {path}: {code} {body:?}");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "GET {path}: still {code} {body:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A server started with the Deployment's args (config and port adapted): the liveness and
/// readiness probes hit paths it serves on the port it was told to listen on, with a
/// timeout longer than the 2 s the endpoints wait for the engine; the Service and the
/// ServiceMonitor reach its metrics. SIGTERM stops it with exit 0, the images mirrored.
#[test]
fn deployment_args_start_a_server_that_answers_probes_service_and_monitor() {
    let d = deployment();
    let pod = deployment_pod(&d);
    let ct = container(pod);
    let a = args(ct);
    assert_eq!(a.first().map(String::as_str), Some("server"), "{a:?}");

    let scratch = Scratch::new();
    let (run_args, port) = adapt(&a, &scratch.config());
    let port = port.expect("the Deployment passes --listen") as u64;
    let mut p = Proc::spawn(scratch.command(&run_args));
    let addr = p.listen_addr();

    for (probe, want, allowed) in [
        ("livenessProbe", 200, &[][..]),
        // 503 during the initial pass (and when a step is stale), 200 after it.
        ("readinessProbe", 200, &[503][..]),
    ] {
        let pr = &ct[probe];
        let get = &pr["httpGet"];
        let path = get["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{probe}: no httpGet.path"));
        assert_eq!(
            resolve_port(ct, &get["port"]),
            Some(port),
            "{probe}: port is not the --listen port"
        );
        assert!(
            matches!(get["scheme"].as_str(), None | Some("HTTP")),
            "{probe}"
        );
        assert!(
            pr["timeoutSeconds"].as_u64().unwrap_or(1) > 2,
            "{probe}: timeoutSeconds must exceed the 2 s the endpoint waits"
        );
        let body = poll(&addr, path, want, allowed);
        assert_eq!(body, "ok\n", "{probe} {path}");
    }
    assert_eq!(http_get(&addr, "/nothere").0, 404, "unknown paths are 404");

    // Service → container port; annotations and ServiceMonitor → the metrics path.
    let b = base();
    let svc = one(&b, "Service");
    let sm = one(&b, "ServiceMonitor");
    assert!(
        labels_match(
            &svc["spec"]["selector"],
            &d["spec"]["template"]["metadata"]["labels"]
        ),
        "the Service selects the Deployment's pods"
    );
    assert!(
        labels_match(
            &sm["spec"]["selector"]["matchLabels"],
            &svc["metadata"]["labels"]
        ),
        "the ServiceMonitor selects the Service"
    );
    let sports = svc["spec"]["ports"].as_sequence().unwrap();
    assert_eq!(sports.len(), 1);
    let sport = &sports[0];
    assert_eq!(resolve_port(ct, &sport["targetPort"]), Some(port));
    let ann = &svc["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(
        ann["prometheus.io/port"].as_str(),
        Some(port.to_string().as_str())
    );
    assert_eq!(
        svc["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true),
        "a stale (not ready) server must still be scraped"
    );
    let eps = sm["spec"]["endpoints"].as_sequence().unwrap();
    assert_eq!(eps.len(), 1);
    assert_eq!(
        eps[0]["port"], sport["name"],
        "ServiceMonitor port = Service port name"
    );
    let path = eps[0]["path"].as_str().unwrap_or("/metrics");
    assert_eq!(ann["prometheus.io/path"].as_str(), Some(path));
    let (code, text) = http_get(&addr, path);
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("# TYPE regsync_build_info gauge"), "{text}");

    p.signal(libc::SIGTERM);
    let st = p.wait_exit(SHUTDOWN_TIMEOUT);
    assert_eq!(st.code(), Some(0), "{}", p.stderr());
    scratch.assert_state_written(&run_args);
    scratch.assert_mirrored();
}

/// The CronJob's `once` command line mirrors and exits 0.
#[test]
fn cronjob_args_run_once_and_exit_0() {
    let c = cronjob();
    let a = args(container(cronjob_pod(&c)));
    assert_eq!(a.first().map(String::as_str), Some("once"), "{a:?}");
    let scratch = Scratch::new();
    let (run_args, _) = adapt(&a, &scratch.config());
    let mut p = Proc::spawn(scratch.command(&run_args));
    let st = p.wait_exit(Duration::from_secs(60));
    assert_eq!(st.code(), Some(0), "{}", p.stderr());
    assert!(p.stderr().contains("Sync summary"), "{}", p.stderr());
    scratch.assert_mirrored();
}

// ---------------------------------------------------------------------------------------------
// Sharded variants: the environment Kubernetes gives each pod names the shard the binary uses

/// The container's environment as Kubernetes would set it for pod `pod_name` (plus the
/// variables Kubernetes adds itself, `extra`): literal values, and `fieldRef`s to the pod name
/// or the Job's completion-index annotation. Secret references are left out (the scratch
/// config reads none).
fn pod_env(ct: &Yaml, pod_name: &str, extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![("HOSTNAME".into(), pod_name.into())];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let index = extra
        .iter()
        .find(|(k, _)| *k == "JOB_COMPLETION_INDEX")
        .map(|(_, v)| v.clone());
    for e in ct["env"].as_sequence().unwrap_or(&Vec::new()) {
        let n = e["name"].as_str().expect("env name").to_string();
        let v = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match path {
                "metadata.name" => pod_name.to_string(),
                "metadata.annotations['batch.kubernetes.io/job-completion-index']" => {
                    index.clone().expect("a Job index")
                }
                other => panic!("env {n}: fieldRef {other} not simulated"),
            }
        } else {
            continue;
        };
        env.retain(|(k, _)| *k != n);
        env.push((n, v));
    }
    env
}

/// `shard=I/N` and `repositories_owned=K` of the text-format `Sync summary` line.
fn summary_shard(stderr: &str) -> (String, u64) {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("msg=\"Sync summary\""))
        .unwrap_or_else(|| panic!("no Sync summary\n{stderr}"));
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{k}=")).map(String::from))
            .unwrap_or_else(|| panic!("no {k} in {line}"))
    };
    (field("shard"), field("repositories_owned").parse().unwrap())
}

fn env_value(ct: &Yaml, name: &str) -> Option<String> {
    ct["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
        .and_then(|e| e["value"].as_str().map(String::from))
}

/// The sharded CronJob's Indexed Job: one pod per shard (`completions` = `parallelism` =
/// `REGSYNC_SHARDS`). Each pod's environment (its `JOB_COMPLETION_INDEX`, as Kubernetes sets
/// it, and the manifest's variables) makes the Job's `once` command line run as shard
/// `index/N`; together the shards mirror everything, the one target repository owned by
/// exactly one of them.
#[test]
fn sharded_job_pods_run_as_their_completion_index() {
    let c = sharded_cronjob();
    let job = &c["spec"]["jobTemplate"]["spec"];
    assert_eq!(job["completionMode"].as_str(), Some("Indexed"));
    let n = job["completions"].as_u64().expect("completions");
    assert!(n > 1, "a sharded Job has more than one completion");
    assert_eq!(
        job["parallelism"].as_u64(),
        Some(n),
        "parallelism = completions"
    );
    let ct = container(cronjob_pod(&c));
    assert_eq!(env_value(ct, "REGSYNC_SHARDS"), Some(n.to_string()));
    let a = args(ct);
    assert_eq!(a.first().map(String::as_str), Some("once"), "{a:?}");
    let scratch = Scratch::new();
    let (run_args, _) = adapt(&a, &scratch.config());
    let mut owned = 0;
    for i in 0..n {
        // A Job pod's hostname is <job>-<index>-<random>: the index variable decides.
        let pod = format!("{}-29001234-{i}-x7k2p", name(&c));
        let env = pod_env(ct, &pod, &[("JOB_COMPLETION_INDEX", i.to_string())]);
        let mut cmd = scratch.command(&run_args);
        cmd.envs(env);
        let mut p = Proc::spawn(cmd);
        let st = p.wait_exit(Duration::from_secs(60));
        assert_eq!(st.code(), Some(0), "{}", p.stderr());
        let (shard, k) = summary_shard(&p.stderr());
        assert_eq!(shard, format!("{i}/{n}"), "{}", p.stderr());
        owned += k;
    }
    assert_eq!(owned, 1, "the one target repository has one owner");
    scratch.assert_mirrored();
}

/// The sharded StatefulSet: `replicas` = `REGSYNC_SHARDS`, the Deployment's probes,
/// resources and port; pod `<name>-I` (its hostname, set from the pod name) serves
/// `/status` and `regsync_shard_info` for shard `I/N`, answers its probes, and stops with 0.
#[test]
fn statefulset_pods_serve_as_their_ordinal() {
    let s = statefulset();
    let n = s["spec"]["replicas"].as_u64().expect("replicas");
    assert!(n > 1, "a sharded StatefulSet has more than one replica");
    let pod = deployment_pod(&s);
    let ct = container(pod);
    assert_eq!(env_value(ct, "REGSYNC_SHARDS"), Some(n.to_string()));
    let d = deployment();
    let dct = container(deployment_pod(&d));
    for k in [
        "livenessProbe",
        "readinessProbe",
        "resources",
        "ports",
        "securityContext",
    ] {
        assert_eq!(ct[k], dct[k], "{k} differs from the Deployment's");
    }
    assert_eq!(
        pod["securityContext"],
        deployment_pod(&d)["securityContext"]
    );
    assert!(
        labels_match(
            &s["spec"]["selector"]["matchLabels"],
            &s["spec"]["template"]["metadata"]["labels"]
        ),
        "the selector matches the pod labels"
    );
    let objs = sharded_server_variant();
    let svc = one(&objs, "Service");
    assert_eq!(s["spec"]["serviceName"].as_str(), Some(name(svc)));
    assert!(labels_match(
        &svc["spec"]["selector"],
        &s["spec"]["template"]["metadata"]["labels"]
    ));
    // The single Deployment's Service must not pick up the shards' pods.
    let b = base();
    assert!(!labels_match(
        &one(&b, "Service")["spec"]["selector"],
        &s["spec"]["template"]["metadata"]["labels"]
    ));
    let a = args(ct);
    assert_eq!(a.first().map(String::as_str), Some("server"), "{a:?}");
    let scratch = Scratch::new();
    let (run_args, _) = adapt(&a, &scratch.config());
    // each pod has its own claim from the volumeClaimTemplate, so its own state file
    let pod_args: Vec<Vec<String>> = (0..n)
        .map(|i| {
            let mut a = run_args.clone();
            if let Some(at) = a.iter().position(|x| x == "--state") {
                let own = scratch.path(&format!("state/{i}"));
                std::fs::create_dir_all(&own).unwrap();
                let file = Path::new(&a[at + 1]).file_name().unwrap().to_owned();
                a[at + 1] = own.join(file).display().to_string();
            }
            a
        })
        .collect();
    let mut procs: Vec<Proc> = (0..n)
        .map(|i| {
            let mut cmd = scratch.command(&pod_args[i as usize]);
            cmd.envs(pod_env(ct, &format!("{}-{i}", name(&s)), &[]));
            Proc::spawn(cmd)
        })
        .collect();
    let mut owned = 0;
    for (i, p) in procs.iter_mut().enumerate() {
        let addr = p.listen_addr();
        poll(&addr, "/readyz", 200, &[503]);
        let (code, body) = http_get(&addr, "/status");
        assert_eq!(code, 200, "{body}");
        let status: Json = serde_json::from_str(&body).unwrap();
        assert_eq!(status["shard"]["index"], i as u64, "{}", status["shard"]);
        assert_eq!(status["shard"]["count"], n, "{}", status["shard"]);
        owned += status["shard"]["repositories_owned"].as_u64().unwrap();
        let (_, metrics) = http_get(&addr, "/metrics");
        let want = format!("regsync_shard_info{{shard=\"{i}\",shards=\"{n}\"}} 1.0");
        assert!(
            metrics.lines().any(|l| l == want),
            "{want} not in\n{metrics}"
        );
    }
    assert_eq!(owned, 1, "the one target repository has one owner");
    for p in &mut procs {
        p.signal(libc::SIGTERM);
        let st = p.wait_exit(SHUTDOWN_TIMEOUT);
        assert_eq!(st.code(), Some(0), "{}", p.stderr());
    }
    for a in &pod_args {
        scratch.assert_state_written(a);
    }
    scratch.assert_mirrored();
}

// ---------------------------------------------------------------------------------------------
// Grafana

/// Every `expr` (and variable query) in the dashboard, with where it is.
fn dashboard_queries(v: &Json, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Json::Object(m) => {
            for (k, x) in m {
                let here = format!("{at}.{k}");
                match (k.as_str(), x) {
                    ("expr" | "definition", Json::String(s)) => out.push((here, s.clone())),
                    ("query", Json::String(s)) if s.contains("regsync_") => {
                        out.push((here, s.clone()))
                    }
                    _ => dashboard_queries(x, &here, out),
                }
            }
        }
        Json::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                dashboard_queries(x, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The metric families of a Prometheus text exposition: name → type, from the `# TYPE`
/// lines. A counter declared without `_total` (OpenMetrics style) also answers to it.
fn declared_families(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for l in text.lines() {
        let mut f = l.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (f.next(), f.next(), f.next(), f.next())
        {
            out.insert(name.to_string(), kind.to_string());
            if kind == "counter" && !name.ends_with("_total") {
                out.insert(format!("{name}_total"), kind.to_string());
            }
        }
    }
    out
}

/// The family a queried series belongs to: itself, or the histogram of a `_bucket`, `_sum`
/// or `_count` series.
fn family_of(series: &str, declared: &BTreeMap<String, String>) -> Option<String> {
    if declared.contains_key(series) {
        return Some(series.to_string());
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = series.strip_suffix(suffix) {
            let ok = match declared.get(base).map(String::as_str) {
                Some("histogram") => true,
                Some("summary") => suffix != "_bucket",
                _ => false,
            };
            if ok {
                return Some(base.to_string());
            }
        }
    }
    None
}

/// The comparison itself, on prometheus-client's text format: a counter's family is declared
/// with its `_total`, a histogram's series are its `_bucket`, `_sum` and `_count`.
#[test]
fn families_are_read_from_type_lines() {
    let text = "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n\
                # TYPE h_seconds histogram\nh_seconds_bucket{le=\"1.0\"} 0\n\
                # TYPE g gauge\n# TYPE om counter\n# EOF\n";
    let d = declared_families(text);
    for (series, family) in [
        ("a_total", Some("a_total")),
        ("h_seconds_bucket", Some("h_seconds")),
        ("h_seconds_sum", Some("h_seconds")),
        ("h_seconds_count", Some("h_seconds")),
        ("g", Some("g")),
        ("om_total", Some("om_total")),
        ("a", None),
        ("g_bucket", None),
        ("h_seconds", Some("h_seconds")),
        ("nothere", None),
    ] {
        assert_eq!(family_of(series, &d).as_deref(), family, "{series}");
    }
}

/// The dashboard's panels query the metrics of the operations issue, with the data source
/// chosen by a variable; every series it names is a family that a running server's /metrics
/// declares (histogram series through their family).
///
/// Fails until the HTTP, rate-limit, in-flight and step-duration metrics land in the binary.
#[test]
fn dashboard_queries_only_metrics_the_binary_exports() {
    let path = deploy().join("grafana/regsync.json");
    let dash: Json = serde_json::from_str(&read(&path)).expect("the dashboard is JSON");
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));

    // The data source is a variable; every panel and query uses it.
    let vars = dash["templating"]["list"].as_array().expect("templating");
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource" && v["query"] == "prometheus")
        .expect("a Prometheus data source variable");
    let ds_ref = format!("${{{}}}", ds["name"].as_str().unwrap());
    let mut panels = Vec::new();
    let mut stack: Vec<&Json> = dash["panels"].as_array().unwrap().iter().collect();
    while let Some(p) = stack.pop() {
        if p["type"] == "row" {
            stack.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            panels.push(p);
        }
    }
    assert!(panels.len() >= 12, "{} panels", panels.len());
    let mut errors = Vec::new();
    let mut ids = BTreeSet::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("?");
        if !ids.insert(p["id"].as_u64()) {
            errors.push(format!("{title}: duplicate id {}", p["id"]));
        }
        if p["datasource"]["uid"].as_str() != Some(ds_ref.as_str()) {
            errors.push(format!("{title}: datasource is not {ds_ref}"));
        }
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if targets.is_empty() {
            errors.push(format!("{title}: no query"));
        }
        for t in targets {
            let e = t["expr"].as_str().unwrap_or("");
            if !e.contains("regsync_") {
                errors.push(format!("{title}: {e:?} queries no regsync metric"));
            }
            let depth = e.chars().try_fold(0i32, |d, c| {
                let d = match c {
                    '(' | '{' | '[' => d + 1,
                    ')' | '}' | ']' => d - 1,
                    _ => d,
                };
                (d >= 0).then_some(d)
            });
            if depth != Some(0) {
                errors.push(format!("{title}: unbalanced brackets in {e:?}"));
            }
            if t["datasource"]["uid"].as_str().is_some_and(|u| u != ds_ref) {
                errors.push(format!("{title}: a query's datasource is not {ds_ref}"));
            }
        }
    }
    fail_all("dashboard panels", &errors);

    let mut queries = Vec::new();
    dashboard_queries(&dash, "", &mut queries);
    let re = fancy_regex::Regex::new(r"regsync_[a-z_]+").unwrap();
    let mut used: BTreeMap<String, String> = BTreeMap::new();
    for (at, q) in &queries {
        for m in re.find_iter(q) {
            used.entry(m.unwrap().as_str().to_string())
                .or_insert_with(|| at.clone());
        }
    }
    let strip = |s: &str| -> String {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(b) = s.strip_suffix(suffix) {
                return b.to_string();
            }
        }
        s.to_string()
    };
    let used_families: BTreeSet<String> = used.keys().map(|s| strip(s)).collect();
    // The panels of the issue: each metric of its list is on the dashboard.
    let wanted = [
        "regsync_build_info",
        "regsync_step_runs_total",
        "regsync_step_last_run_timestamp_seconds",
        "regsync_step_last_success_timestamp_seconds",
        "regsync_step_next_run_timestamp_seconds",
        "regsync_step_run_duration_seconds",
        "regsync_images_total",
        "regsync_blobs_total",
        "regsync_copied_bytes_total",
        "regsync_http_requests_total",
        "regsync_http_request_duration_seconds",
        "regsync_http_retries_total",
        "regsync_ratelimit_remaining",
        "regsync_ratelimit_waits_total",
        "regsync_ratelimit_wait_seconds_total",
        "regsync_images_in_flight",
        "regsync_requests_in_flight",
    ];
    let absent: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|w| !used_families.contains(*w))
        .collect();
    assert!(absent.is_empty(), "not on the dashboard: {absent:?}");
    let stale = queries
        .iter()
        .any(|(_, q)| q.contains("time() - regsync_step_last_success_timestamp_seconds"));
    assert!(stale, "no stale-steps query");

    // What a running server declares (a family is declared even without samples).
    let scratch = Scratch::new();
    let (run_args, _) = adapt(
        &[
            "server".into(),
            "-c".into(),
            "x".into(),
            "--listen".into(),
            ":0".into(),
        ],
        &scratch.config(),
    );
    let mut p = Proc::spawn(scratch.command(&run_args));
    let addr = p.listen_addr();
    poll(&addr, "/readyz", 200, &[503]);
    let (code, text) = http_get(&addr, "/metrics");
    assert_eq!(code, 200, "{text}");
    let declared = declared_families(&text);
    assert!(declared.contains_key("regsync_build_info"), "{text}");
    let mut missing = Vec::new();
    for (series, at) in &used {
        match family_of(series, &declared) {
            Some(_) => {}
            None => missing.push(format!("{series} (at {at})")),
        }
    }
    // Histogram series are read through histogram_quantile over their buckets.
    for (series, at) in &used {
        if series.ends_with("_bucket") && family_of(series, &declared).is_some() {
            let q = &queries.iter().find(|(a, _)| a == at).unwrap().1;
            assert!(q.contains("histogram_quantile("), "{at}: {q}");
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard queries series that /metrics does not declare:\n  {}\ndeclared: {:?}",
        missing.join("\n  "),
        declared.keys().collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// systemd

/// `Key=Value` lines by section (a key may repeat; continuation lines joined).
fn unit_file(text: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut section = String::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
        {
            continue;
        }
        if let Some(l) = line.strip_suffix('\\') {
            pending.push_str(l);
            pending.push(' ');
            continue;
        }
        let line = format!("{pending}{line}");
        pending.clear();
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not Key=Value: {line:?}"));
        out.entry(section.clone())
            .or_default()
            .push((k.trim().to_string(), v.trim().to_string()));
    }
    out
}

fn unit() -> (String, BTreeMap<String, Vec<(String, String)>>) {
    let text = read(&deploy().join("systemd/regsync.service"));
    let parsed = unit_file(&text);
    (text, parsed)
}

/// The last value of `key` in `[Service]` (systemd's "the last assignment wins").
fn service_value(u: &BTreeMap<String, Vec<(String, String)>>, key: &str) -> Option<String> {
    u.get("Service")?
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

/// `45s`, `1min`, `2min 30s`, `90` (seconds).
fn timespan(s: &str) -> Option<Duration> {
    let mut total = 0u64;
    for part in s.split_whitespace() {
        let digits: String = part.chars().take_while(|c| c.is_ascii_digit()).collect();
        let n: u64 = digits.parse().ok()?;
        total += match &part[digits.len()..] {
            "" | "s" | "sec" => n,
            "m" | "min" => n * 60,
            "h" => n * 3600,
            _ => return None,
        };
    }
    Some(Duration::from_secs(total))
}

fn systemd_analyze() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|d| d.join("systemd-analyze"))
        .find(|p| p.is_file())
}

/// `systemd-analyze verify` accepts the unit (its binary rewritten to the one built here)
/// without a single warning about it.
#[test]
fn systemd_unit_verifies() {
    let Some(analyze) = systemd_analyze() else {
        eprintln!("NOTE: systemd-analyze not found; systemd_unit_verifies checked nothing");
        return;
    };
    let (text, u) = unit();
    let exec = service_value(&u, "ExecStart").expect("ExecStart");
    let program = exec.split_whitespace().next().unwrap();
    assert!(text.contains(&format!("ExecStart={program} ")), "{exec}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("regsync.service");
    std::fs::write(
        &file,
        text.replace(
            &format!("ExecStart={program} "),
            &format!("ExecStart={BIN} "),
        ),
    )
    .unwrap();
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&file)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{stderr}");
    let about_it: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .filter(|l| l.contains("regsync.service") || l.contains(BIN))
        .collect();
    assert!(
        about_it.is_empty(),
        "systemd-analyze verify warns:\n{}",
        about_it.join("\n")
    );
}

/// The unit's hardening, reload and stop settings, and its `ExecStart` runs a server that
/// answers /healthz and stops on the unit's KillSignal within its TimeoutStopSec.
#[test]
fn systemd_unit_is_hardened_and_its_command_line_runs() {
    let (_, u) = unit();
    let mut errors = Vec::new();
    for (k, want) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("StateDirectory", "regsync"),
        ("ConfigurationDirectory", "regsync"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ] {
        let got = service_value(&u, k);
        if got.as_deref() != Some(want) {
            errors.push(format!("{k}={want} (found {got:?})"));
        }
    }
    let families: BTreeSet<String> = service_value(&u, "RestrictAddressFamilies")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    let want: BTreeSet<String> = ["AF_INET", "AF_INET6", "AF_UNIX"].map(String::from).into();
    if families != want {
        errors.push(format!(
            "RestrictAddressFamilies = {want:?} (found {families:?})"
        ));
    }
    let filters: Vec<String> = u["Service"]
        .iter()
        .filter(|(k, _)| k == "SystemCallFilter")
        .map(|(_, v)| v.clone())
        .collect();
    if !filters
        .iter()
        .any(|f| f.split_whitespace().any(|w| w == "@system-service"))
    {
        errors.push(format!(
            "SystemCallFilter=@system-service (found {filters:?})"
        ));
    }
    let stop = service_value(&u, "TimeoutStopSec").and_then(|s| timespan(&s));
    if stop.is_none_or(|s| s <= SHUTDOWN_TIMEOUT) {
        errors.push(format!(
            "TimeoutStopSec > {SHUTDOWN_TIMEOUT:?} (found {stop:?})"
        ));
    }
    for (k, v) in &u["Service"] {
        if k == "Environment"
            && ["PASS", "TOKEN", "SECRET"]
                .iter()
                .any(|w| v.to_uppercase().contains(w))
        {
            errors.push(format!("a secret in Environment={v}"));
        }
    }
    fail_all("regsync.service", &errors);

    // ExecStart: an absolute program, a config under ConfigurationDirectory, a loopback port.
    let exec = service_value(&u, "ExecStart").unwrap();
    let mut words = exec.split_whitespace().map(String::from);
    let program = words.next().unwrap();
    assert!(
        program.starts_with('/') && program.ends_with("/regsync"),
        "{exec}"
    );
    let a: Vec<String> = words.collect();
    assert_eq!(a.first().map(String::as_str), Some("server"), "{exec}");
    let cfg = flag_value(&a, &["-c", "--config"]).expect("-c in ExecStart");
    assert!(
        cfg.starts_with("/etc/regsync/"),
        "{cfg} is not under ConfigurationDirectory"
    );
    let listen = flag_value(&a, &["--listen"]).expect("--listen in ExecStart");
    assert!(
        listen.starts_with("127.0.0.1:"),
        "{listen}: metrics on loopback only"
    );
    // the state database lies in StateDirectory (/var/lib/<name>, writable under
    // ProtectSystem=strict and kept across restarts)
    let state = flag_value(&a, &["--state"]).expect("--state in ExecStart");
    let state_dir = format!("/var/lib/{}/", service_value(&u, "StateDirectory").unwrap());
    assert!(
        state.starts_with(&state_dir) && !state[state_dir.len()..].contains('/'),
        "{state} is not a file in StateDirectory {state_dir}"
    );

    let scratch = Scratch::new();
    let (run_args, _) = adapt(&a, &scratch.config());
    let mut p = Proc::spawn(scratch.command(&run_args));
    let addr = p.listen_addr();
    assert_eq!(http_get(&addr, "/healthz"), (200, "ok\n".to_string()));
    poll(&addr, "/readyz", 200, &[503]);
    p.signal(libc::SIGTERM);
    let st = p.wait_exit(stop.unwrap());
    assert_eq!(st.code(), Some(0), "{}", p.stderr());
    scratch.assert_state_written(&run_args);
    scratch.assert_mirrored();
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

struct Stage {
    from: String,
    name: Option<String>,
    /// (instruction in upper case, the rest of the line)
    instructions: Vec<(String, String)>,
}

fn dockerfile() -> Vec<Stage> {
    let text = read(&deploy().join("Dockerfile"));
    let mut logical = Vec::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.starts_with('#') || (line.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(l) = line.strip_suffix('\\') {
            pending.push_str(l);
            pending.push(' ');
            continue;
        }
        logical.push(format!("{pending}{line}"));
        pending.clear();
    }
    assert!(pending.is_empty(), "a continuation line at the end");
    let mut stages: Vec<Stage> = Vec::new();
    for l in logical {
        let (ins, rest) = l.split_once(char::is_whitespace).unwrap_or((&l, ""));
        let ins = ins.to_uppercase();
        let rest = rest.trim().to_string();
        if ins == "FROM" {
            let w: Vec<&str> = rest.split_whitespace().collect();
            let from = w
                .iter()
                .find(|x| !x.starts_with("--"))
                .expect("FROM image")
                .to_string();
            let name = w
                .iter()
                .position(|x| x.eq_ignore_ascii_case("AS"))
                .map(|i| w[i + 1].to_string());
            stages.push(Stage {
                from,
                name,
                instructions: Vec::new(),
            });
        } else if let Some(s) = stages.last_mut() {
            s.instructions.push((ins, rest));
        } else {
            assert_eq!(ins, "ARG", "only ARG before the first FROM");
        }
    }
    stages
}

impl Stage {
    fn all(&self, ins: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|(i, _)| i == ins)
            .map(|(_, r)| r.as_str())
            .collect()
    }

    fn last(&self, ins: &str) -> Option<&str> {
        self.all(ins).last().copied()
    }

    /// `ENV K=V K2=V2` and `ENV K V`.
    fn env(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for e in self.all("ENV") {
            if e.contains('=') {
                for kv in e.split_whitespace() {
                    if let Some((k, v)) = kv.split_once('=') {
                        out.insert(k.to_string(), v.trim_matches('"').to_string());
                    }
                }
            } else if let Some((k, v)) = e.split_once(char::is_whitespace) {
                out.insert(k.to_string(), v.trim().to_string());
            }
        }
        out
    }

    /// `COPY [--from=x] src... dst`: (from, sources, destination).
    fn copies(&self) -> Vec<(Option<String>, Vec<String>, String)> {
        self.all("COPY")
            .into_iter()
            .map(|c| {
                let mut from = None;
                let mut words = Vec::new();
                for w in c.split_whitespace() {
                    if let Some(f) = w.strip_prefix("--from=") {
                        from = Some(f.to_string());
                    } else if !w.starts_with("--") {
                        words.push(w.to_string());
                    }
                }
                assert!(!c.trim_start().starts_with('['), "COPY in JSON form: {c}");
                let dst = words.pop().expect("COPY destination");
                (from, words, dst)
            })
            .collect()
    }
}

/// An exec-form (JSON array) instruction.
fn exec_form(v: &str) -> Vec<String> {
    serde_json::from_str(v).unwrap_or_else(|e| panic!("not exec (JSON) form: {v}: {e}"))
}

/// The numeric uid of the final stage's USER.
fn dockerfile_uid() -> u64 {
    let stages = dockerfile();
    let user = stages
        .last()
        .unwrap()
        .last("USER")
        .expect("USER in the final stage");
    let uid = user.split(':').next().unwrap();
    uid.parse()
        .unwrap_or_else(|_| panic!("USER {user} is not numeric"))
}

/// The binary's name in Cargo.toml (`[[bin]] name = "..."`).
fn cargo_bin_name() -> String {
    let toml = read(&repo().join("Cargo.toml"));
    let bin = toml.split("[[bin]]").nth(1).expect("[[bin]] in Cargo.toml");
    bin.lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "name").then(|| v.trim().trim_matches('"').to_string())
        })
        .expect("[[bin]] name")
}

/// A multi-stage build: a rust stage runs `cargo build --release --locked` on files that
/// exist in the repository (enough for cargo: `cargo fetch --offline --locked` accepts them
/// alone) and the final stage copies the binary from where cargo writes it; the final image
/// runs no shell command, has a numeric non-root USER, `ENTRYPOINT ["regsync"]` on its PATH,
/// HOME and DOCKER_CONFIG set, and the Deployment's command line as its CMD.
#[test]
fn dockerfile_builds_the_cargo_binary_into_a_non_root_image() {
    let stages = dockerfile();
    assert!(stages.len() >= 2, "multi-stage");
    let last = stages.last().unwrap();
    let builders = &stages[..stages.len() - 1];
    let build = builders
        .iter()
        .find(|s| {
            s.all("RUN")
                .iter()
                .any(|r| r.contains("cargo build --release --locked"))
        })
        .expect("a stage running cargo build --release --locked");
    let image = build.from.trim_start_matches("docker.io/library/");
    assert!(
        image.starts_with("rust:"),
        "build stage FROM {}",
        build.from
    );
    assert!(
        last.all("RUN").is_empty(),
        "the final stage runs nothing (no shell): {:?}",
        last.all("RUN")
    );
    assert!(
        last.from.contains("distroless") || last.from.contains("slim") || last.from == "scratch",
        "final stage FROM {}",
        last.from
    );

    let uid = dockerfile_uid();
    assert!(uid > 0, "USER must not be root");
    let user = last.last("USER").unwrap();
    if let Some(gid) = user.split(':').nth(1) {
        assert!(
            gid.parse::<u64>().is_ok(),
            "group of USER {user} is not numeric"
        );
    }
    assert_eq!(
        exec_form(last.last("ENTRYPOINT").expect("ENTRYPOINT")),
        ["regsync"]
    );
    let cmd = exec_form(last.last("CMD").expect("CMD"));
    let d = deployment();
    // the image alone has no volume for a state file: it runs stateless, like regsync
    let mut want = args(container(deployment_pod(&d)));
    if let Some(at) = want.iter().position(|a| a == "--state") {
        want.drain(at..at + 2);
    }
    assert_eq!(cmd, want, "CMD = the Deployment's args without --state");
    let env = last.env();
    for k in ["HOME", "DOCKER_CONFIG"] {
        assert!(env.get(k).is_some_and(|v| v.starts_with('/')), "ENV {k}");
    }

    // The binary comes from where cargo writes it, onto the PATH, named like the entry point.
    let bin = cargo_bin_name();
    let from_build: Vec<_> = last
        .copies()
        .into_iter()
        .filter(|(f, _, _)| f.is_some())
        .collect();
    assert_eq!(from_build.len(), 1, "one COPY --from in the final stage");
    let (from, srcs, dst) = &from_build[0];
    let from = from.as_deref().unwrap();
    let stage = builders
        .iter()
        .find(|s| s.name.as_deref() == Some(from))
        .unwrap_or_else(|| panic!("COPY --from={from}: no such stage"));
    assert!(
        std::ptr::eq(stage, build),
        "the binary comes from the cargo stage"
    );
    let workdir = stage.last("WORKDIR").expect("WORKDIR in the build stage");
    assert_eq!(srcs, &[format!("{workdir}/target/release/{bin}")]);
    let dst = Path::new(dst);
    assert_eq!(
        dst.file_name().unwrap(),
        "regsync",
        "the entry point's name"
    );
    let path = env
        .get("PATH")
        .cloned()
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let dir = dst.parent().unwrap().to_str().unwrap();
    assert!(
        path.split(':').any(|p| p == dir),
        "{dir} not on PATH {path}"
    );

    // The build stage's sources exist and are all cargo needs.
    let ctx = tempfile::tempdir().unwrap();
    let mut copied = Vec::new();
    for (from, srcs, dst) in stage.copies() {
        assert!(from.is_none(), "the build stage copies from the repository");
        let dst_dir = ctx
            .path()
            .join(dst.trim_start_matches("./").trim_start_matches('/'));
        for s in &srcs {
            let p = repo().join(s);
            assert!(p.exists(), "COPY {s}: not in the repository");
            if p.is_dir() {
                copy_dir(&p, &dst_dir);
            } else {
                std::fs::create_dir_all(&dst_dir).unwrap();
                std::fs::copy(&p, dst_dir.join(p.file_name().unwrap())).unwrap();
            }
            copied.push(s.clone());
        }
    }
    for need in ["Cargo.toml", "Cargo.lock"] {
        assert!(copied.iter().any(|c| c == need), "{need} is not copied");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // For this machine's target only: offline, a fresh clone's cache holds what the build
    // downloaded (the host's dependencies), not, say, `windows-sys`.
    let rustc = Command::new("rustc").arg("-vV").output().unwrap();
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host");
    let out = Command::new(cargo)
        .args([
            "fetch",
            "--offline",
            "--locked",
            "--quiet",
            "--target",
            &host,
        ])
        .current_dir(ctx.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo rejects the copied sources:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The build context leaves out target/ but none of the copied sources.
    let ignore = read(&deploy().join("Dockerfile.dockerignore"));
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(patterns.contains(&"target"), "target/ in the build context");
    for c in &copied {
        assert!(
            !patterns
                .iter()
                .any(|p| c == p || c.starts_with(&format!("{p}/"))),
            "{c} is excluded from the context"
        );
    }
}
