//! `odf-gateway certs`: a development CA, a server certificate and client certificates,
//! for trying HTTPS and MQTT over TLS on one machine. Never for production keys.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use super::{Context, output};

/// Make a development CA (ca.pem, ca.key), a server certificate for the given hosts
/// (server.pem, server.key) and client certificates (client-NAME.pem/.key, subject CN=NAME).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder to write into (created if missing); existing files are replaced.
    #[arg(long, default_value = "certs/dev")]
    out: PathBuf,
    /// Host names and addresses the server certificate is for.
    #[arg(long = "host", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()])]
    hosts: Vec<String>,
    /// A client certificate per name (its subject is CN=NAME, for `cert_subject`).
    #[arg(long = "client")]
    clients: Vec<String>,
}

pub fn run(_ctx: &Context, args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let ca_key = KeyPair::generate()?;
    write(&args.out, "ca.key", &ca_key.serialize_pem())?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "odf-gateway development CA");
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;
    write(&args.out, "ca.pem", &ca.pem())?;

    let leaf = |names: Vec<String>,
                common_name: &str,
                usage: ExtendedKeyUsagePurpose|
     -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        Ok((params.signed_by(&key, &ca)?.pem(), key.serialize_pem()))
    };
    let first = args.hosts.first().cloned().unwrap_or_else(|| "localhost".into());
    let (cert, key) = leaf(args.hosts.clone(), &first, ExtendedKeyUsagePurpose::ServerAuth)?;
    write(&args.out, "server.pem", &cert)?;
    write(&args.out, "server.key", &key)?;
    for name in &args.clients {
        let (cert, key) = leaf(Vec::new(), name, ExtendedKeyUsagePurpose::ClientAuth)?;
        write(&args.out, &format!("client-{name}.pem"), &cert)?;
        write(&args.out, &format!("client-{name}.key"), &key)?;
    }
    output::line(format!(
        "Wrote a development CA, a server certificate for {} and {} client certificate(s) to {}",
        args.hosts.join(", "),
        args.clients.len(),
        args.out.display()
    ))
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    #[cfg(unix)]
    if name.ends_with(".key") {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    Ok(())
}
