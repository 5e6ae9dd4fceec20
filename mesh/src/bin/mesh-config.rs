//! `mesh-config`: writes the Envoy sidecar bootstraps (and a development CA with SPIFFE certificates) for the
//! compose `mesh` profile (deploy/mesh/compose.mesh.yml), translated from the repo's `istio/` resources.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use mesh::{
    Addr, ClientSidecar, Endpoint, Manifests, Outbound, ServerSidecar, Tls, certs::Ca, envoy, host_namespace, spiffe_id,
};

/// Translate istio/ into Envoy bootstraps for the compose mesh profile.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Directory with the Istio resources.
    #[arg(long, default_value = "istio")]
    istio_dir: PathBuf,
    /// Where to write the bootstraps and certificates.
    #[arg(long, default_value = "deploy/mesh/generated")]
    out: PathBuf,
    /// Where `--out` is mounted inside the sidecar containers (paths in the bootstraps use it).
    #[arg(long, default_value = "/etc/mesh")]
    mount: PathBuf,
    /// The data service host the recommendation agent calls (VirtualService host).
    #[arg(long, default_value = "data.agents.svc.cluster.local")]
    data_host: String,
    /// Address of data's sidecar as the recommendation sidecar reaches it (compose DNS name).
    #[arg(long, default_value = "data:15006")]
    data_endpoint: Addr,
    /// Version label of that endpoint (the DestinationRule subsets select on it).
    #[arg(long, default_value = "v1")]
    data_version: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(written) => {
            for w in written {
                println!("{}", w.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mesh-config: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<Vec<PathBuf>, Box<dyn std::error::Error>> {
    let manifests = Manifests::load(&args.istio_dir)?;
    std::fs::create_dir_all(&args.out)?;
    let ns = host_namespace(&args.data_host).ok_or("data host must be <svc>.<ns>.svc...")?.to_owned();
    // A development CA standing in for istiod's: one certificate per service account (contract: ServiceAccounts
    // `data` and `recommendation`).
    let ca = Ca::new("agent-mesh local mesh CA")?;
    let mounted = |tls: Tls| Tls {
        cert_chain: args.mount.join(tls.cert_chain.file_name().unwrap_or_default()),
        private_key: args.mount.join(tls.private_key.file_name().unwrap_or_default()),
        trusted_ca: args.mount.join(tls.trusted_ca.file_name().unwrap_or_default()),
    };
    let rec_tls = mounted(ca.write_identity(&args.out, "recommendation", &spiffe_id(&ns, "recommendation"))?);
    let data_tls = mounted(ca.write_identity(&args.out, "data", &spiffe_id(&ns, "data"))?);
    let admin: Addr = "127.0.0.1:15000".parse()?;

    let client = envoy::client_bootstrap(
        &manifests,
        &ClientSidecar {
            node_id: "recommendation-sidecar".into(),
            admin: admin.clone(),
            tls: rec_tls,
            outbound: vec![Outbound {
                host: args.data_host.clone(),
                // The recommendation agent's DATA_URL points here (same network namespace).
                listen: "127.0.0.1:15001".parse()?,
                endpoints: vec![Endpoint::version(args.data_endpoint.clone(), &args.data_version)],
                server_identities: vec![spiffe_id(&ns, "data")],
            }],
        },
    )?;
    let server = envoy::server_bootstrap(
        &manifests,
        &ServerSidecar {
            node_id: "data-sidecar".into(),
            admin,
            namespace: ns,
            labels: [("app", "data"), ("version", args.data_version.as_str())]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            service_port: 8000,
            // Istio's inbound capture port; the data agent itself binds 127.0.0.1:8000 only.
            listen: "0.0.0.0:15006".parse()?,
            app: "127.0.0.1:8000".parse()?,
            tls: data_tls,
        },
    )?;
    let mut written = Vec::new();
    for (file, config) in [("recommendation-sidecar.json", client), ("data-sidecar.json", server)] {
        let path = args.out.join(file);
        std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
        written.push(path);
    }
    Ok(written)
}
