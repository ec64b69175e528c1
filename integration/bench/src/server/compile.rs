//! [c] Compile time of a large mesh: N AuthorizationPolicies over M namespaces and W
//! workloads, read from a directory by the server's own loader, then every workload's
//! snapshot compiled as `peerguard serve` does it (compile, JSON, the two ECDS resources).

use super::ServerArgs;
use peerguard_filter::compile::{compile, MeshConfig};
use peerguard_server::snapshot::{self, NodeSnapshot};
use peerguard_server::source::dir::Loader;
use peerguard_server::source::Inputs;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// Cold reads and compiles timed; the median is reported (a shared 2-core box is noisy).
pub const ROUNDS: usize = 3;

pub struct Result {
    /// Medians over [`ROUNDS`] cold reads (a new loader each time, nothing cached).
    pub parse: Duration,
    pub reparse_one: Duration,
    pub compile: Duration,
    pub resources: usize,
    pub errors: usize,
    pub workloads: usize,
    pub applied: usize,
    pub json_bytes: usize,
}

/// Labels per namespace: policies select one of them, or the whole namespace.
const APPS: usize = 10;

pub fn run(dir: &Path, args: &ServerArgs) -> anyhow::Result<Result> {
    std::fs::create_dir_all(dir)?;
    let namespaces = args.namespaces.max(1);
    // One file per namespace, as a GitOps repository would have it.
    let mut files = vec![String::new(); namespaces];
    for w in 0..args.workloads {
        let ns = w % namespaces;
        let _ = write!(
            files[ns],
            "---\napiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {{name: w-{w}, namespace: ns-{ns}, labels: {{app: app-{}}}}}\nspec:\n  serviceAccount: sa-{w}\n  services: [{{name: svc-{w}, ports: [{{name: http, port: 8000, targetPort: 8080}}]}}]\n",
            (w / namespaces) % APPS
        );
    }
    for p in 0..args.policies {
        let ns = p % namespaces;
        let action = if p % 4 == 0 { "DENY" } else { "ALLOW" };
        // Most policies select one app; every tenth applies to the whole namespace.
        let selector = if p % 10 == 9 {
            String::new()
        } else {
            format!(
                "  selector: {{matchLabels: {{app: app-{}}}}}\n",
                (p / namespaces) % APPS
            )
        };
        let _ = write!(
            files[ns],
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p-{p}, namespace: ns-{ns}}}\nspec:\n{selector}  action: {action}\n  rules:\n  - from: [{{source: {{principals: [cluster.local/ns/ns-{}/sa/sa-{}, cluster.local/ns/ns-{}/sa/*]}}}}]\n    to: [{{operation: {{methods: [GET, POST], paths: [/api/{p}/*, /v{}/items]}}}}]\n  - from: [{{source: {{namespaces: [ns-{}]}}}}]\n    to: [{{operation: {{ports: [\"8080\"]}}}}]\n",
            (p * 7) % namespaces,
            p % 997,
            (p * 13) % namespaces,
            p % 5,
            (p * 3) % namespaces
        );
    }
    for (ns, text) in files.iter().enumerate() {
        std::fs::write(dir.join(format!("ns-{ns}.yaml")), text)?;
    }

    let mut parses = Vec::new();
    let (mut loader, inputs) = cold_load(dir, &mut parses);
    for _ in 1..ROUNDS {
        cold_load(dir, &mut parses);
    }
    let parse = median(parses);
    anyhow::ensure!(
        inputs.unreadable.is_empty(),
        "generated files unreadable: {:?}",
        inputs.unreadable_summary()
    );
    let mesh = MeshConfig {
        trust_domain: "cluster.local".into(),
        trust_domain_aliases: vec![],
        root_namespace: "istio-system".into(),
        ..MeshConfig::default()
    };

    let mut compiles = Vec::new();
    let (mut applied, mut json_bytes) = (0, 0);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        (applied, json_bytes) = compile_all(&inputs, &mesh)?;
        compiles.push(t.elapsed());
    }
    let compile_time = median(compiles);

    // A reload after one file changed: only that file is parsed again.
    let one = dir.join("ns-0.yaml");
    std::fs::write(&one, files[0].replace("name: p-0,", "name: p-0-edited,"))?;
    let t = Instant::now();
    let again = loader.load(dir);
    let reparse_one = t.elapsed();
    anyhow::ensure!(
        again.resources.len() == inputs.resources.len(),
        "the reload lost resources"
    );
    Ok(Result {
        parse,
        reparse_one,
        compile: compile_time,
        resources: inputs.resources.len(),
        errors: inputs.errors.len(),
        workloads: inputs.registry.workloads.len(),
        applied,
        json_bytes,
    })
}

/// Every workload's snapshot, as the server's builder makes it: `(policies applied, JSON bytes)`.
fn compile_all(inputs: &Inputs, mesh: &MeshConfig) -> anyhow::Result<(usize, usize)> {
    let (mut applied, mut json_bytes) = (0, 0);
    // As the server's builder does it: one resource view per namespace.
    let mut views = std::collections::BTreeMap::new();
    for (key, entry) in &inputs.registry.workloads {
        let view = views.entry(key.namespace.clone()).or_insert_with(|| {
            peerguard_server::serve::scoped(&inputs.resources, &key.namespace, &mesh.root_namespace)
        });
        let policy = compile(view, &entry.to_compile(), mesh);
        applied += policy.policies.len();
        let json = serde_json::to_string(&policy)?;
        json_bytes += json.len();
        let mut snap = NodeSnapshot::default();
        snap.insert(
            snapshot::HTTP_FILTER,
            snapshot::http_filter("/opt/peerguard/peerguard.wasm", &json),
        );
        snap.insert(
            snapshot::TCP_FILTER,
            snapshot::tcp_filter("/opt/peerguard/peerguard.wasm", &json),
        );
        std::hint::black_box(snap);
    }
    Ok((applied, json_bytes))
}

/// A read with a new loader (nothing cached), timed into `times`.
fn cold_load(dir: &Path, times: &mut Vec<Duration>) -> (Loader, Inputs) {
    let mut loader = Loader::default();
    let t = Instant::now();
    let inputs = loader.load(dir);
    times.push(t.elapsed());
    (loader, inputs)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}
