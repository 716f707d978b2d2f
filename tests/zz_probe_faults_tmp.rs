mod common;
use common::faults::{FaultOpts, FaultProxy};
use common::*;

#[test]
fn probe() {
    let (src, dst) = (Registry::start(), Registry::start());
    let img = ImageSpec::new(1, Format::Oci).layers(1, 300 * 1024).build();
    push(&src, "a", "v1", &img);
    for (kinds, trunc, drop) in [(vec!["blob_get"], 1.0, 0.0), (vec!["manifest_get"], 0.0, 0.5)] {
        let sp = FaultProxy::start(&src, FaultOpts { drop_rate: drop, truncate_rate: trunc, fault_kinds: kinds.iter().map(|s| s.to_string()).collect(), ..Default::default() });
        let cfg = config(&[&sp, &dst], 1, &[repo_step(&sp.r("a"), &dst.r(&format!("a{}", kinds[0])), &[], &[])]);
        let out = regsync(&["once", "-v", "debug"], &cfg);
        eprintln!("=== {kinds:?} ok={} {:?}", out.success(), sp.stats());
        for l in out.stderr.lines().filter(|l| l.contains("retry") || l.contains("resum") || l.contains("rror") || l.contains("interrupt")).take(8) { eprintln!("{}", &l[..l.len().min(400)]); }
    }
}
