//! `peerguard manifests istio wasmplugin|envoyfilter`: the Istio resources that run peerguard
//! in Istio's own sidecars, rendered from the same mesh and code as `serve` (see
//! `crate::istio_forms`). YAML for people and `kubectl apply -f -` (`--output text`), or a
//! `v1` `List` in JSON (`--output json`).
//!
//! Exit codes: 0 rendered; 1 rendered, but some WasmPlugin carries a configuration the filter
//! refuses (its pods deny every request; the reason is on stderr); 2 invalid input (bad
//! arguments, unreadable mesh, resources with errors: nothing is printed).

use super::test::Format;
use super::workload::{pair, MeshArgs};
use crate::envoy_config::istio::XdsTransport;
use crate::istio_forms::{envoyfilter, wasmplugin};
use serde_json::{json, Value};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand, Debug)]
pub enum What {
    /// Istio resources: `wasmplugin` or `envoyfilter`.
    Istio(IstioArgs),
}

#[derive(clap::Args, Debug)]
pub struct IstioArgs {
    #[command(subcommand)]
    pub form: Form,
}

#[derive(clap::Subcommand, Debug)]
pub enum Form {
    /// One WasmPlugin per workload selector group (pluginConfig = the compiled policy).
    Wasmplugin(WasmPluginArgs),
    /// One EnvoyFilter adding the peerguard filters to sidecars' inbound chains, configured
    /// over ECDS by `peerguard serve`.
    Envoyfilter(EnvoyFilterArgs),
}

#[derive(clap::Args, Debug)]
pub struct WasmPluginArgs {
    #[command(flatten)]
    pub mesh: MeshArgs,
    #[command(flatten)]
    pub module: wasmplugin::ModuleArgs,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(clap::Args, Debug)]
pub struct EnvoyFilterArgs {
    /// `peerguard serve`'s gRPC address as sidecars reach it, `HOST:PORT`.
    #[arg(long, default_value = envoyfilter::DEFAULT_SERVER)]
    pub server: String,
    /// The server's SPIFFE id, checked on its certificate (the server pod in the mesh).
    #[arg(long, default_value = envoyfilter::DEFAULT_SERVER_IDENTITY)]
    pub server_identity: String,
    /// Reach the server in plaintext instead of Istio mTLS (trusted networks only).
    #[arg(long)]
    pub plaintext: bool,
    /// Namespace of the EnvoyFilter: Istio's root namespace for the whole mesh.
    #[arg(long, default_value = envoyfilter::DEFAULT_NAMESPACE)]
    pub namespace: String,
    #[arg(long, default_value = envoyfilter::DEFAULT_NAME)]
    pub name: String,
    /// `workloadSelector` labels, `k=v,k2=v2` (default: every sidecar in scope).
    #[arg(long, value_delimiter = ',')]
    pub selector: Vec<String>,
    /// Only these inbound ports (repeatable; default: every inbound chain).
    #[arg(long)]
    pub port: Vec<u16>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let What::Istio(istio) = args.what;
    match istio.form {
        Form::Wasmplugin(a) => run_wasmplugin(a),
        Form::Envoyfilter(a) => run_envoyfilter(a),
    }
}

fn print(objects: Vec<Value>, format: Format) -> anyhow::Result<()> {
    let text = match format {
        Format::Json => {
            let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
            serde_json::to_string_pretty(&list)? + "\n"
        }
        Format::Text => {
            let mut out = String::new();
            for o in &objects {
                out.push_str("---\n");
                out.push_str(&serde_saphyr::to_string(o)?);
            }
            out
        }
    };
    super::output::write_stdout(&text)
}

fn run_wasmplugin(a: WasmPluginArgs) -> anyhow::Result<u8> {
    if let Err(e) = a.module.check() {
        eprintln!("error: {e}");
        return Ok(2);
    }
    let mesh = match a.mesh.load() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(2);
        }
    };
    let errors = mesh.config_errors();
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        return Ok(2);
    }
    let rendered = wasmplugin::render(&mesh.inputs, &mesh.config, &a.module);
    for w in &rendered.warnings {
        eprintln!("warning: {w}");
    }
    if rendered.objects.is_empty() {
        eprintln!(
            "note: no workload with a sidecar in {} (peerguard Workloads or pods)",
            mesh.origin
        );
    }
    // The WasmPlugins need Istio's inbound connection managers to take the direct peer as the
    // remote address (see `envoyfilter::render_direct_peer`): rendered with them, so that
    // applying this output is complete.
    let mut objects = rendered.objects;
    objects.push(envoyfilter::render_direct_peer(&mesh.config.root_namespace));
    print(objects, a.output)?;
    Ok(if rendered.refused > 0 { 1 } else { 0 })
}

fn run_envoyfilter(a: EnvoyFilterArgs) -> anyhow::Result<u8> {
    let selector = match a
        .selector
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| pair(s, "selector"))
        .collect::<Result<_, _>>()
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    if !a.plaintext && !a.server_identity.starts_with("spiffe://") {
        eprintln!(
            "error: --server-identity {:?}: expected spiffe://<trust domain>/ns/<ns>/sa/<sa>",
            a.server_identity
        );
        return Ok(2);
    }
    let transport = if a.plaintext {
        XdsTransport::Plaintext
    } else {
        XdsTransport::IstioMutual {
            server_identity: a.server_identity.clone(),
        }
    };
    let rendered = envoyfilter::render(&envoyfilter::Options {
        name: a.name,
        namespace: a.namespace,
        selector,
        server: a.server,
        transport,
        ports: a.port,
    });
    match rendered {
        Ok(o) => {
            print(vec![o], a.output)?;
            Ok(0)
        }
        Err(e) => {
            eprintln!("error: --server: {e}");
            Ok(2)
        }
    }
}
