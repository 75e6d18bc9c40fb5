//! `cargo xtask image build|push`: the Lambda container image, built and pushed through the
//! Docker engine API (bollard), never the docker CLI.
//!
//! The image is `FROM scratch` with two files: the static `/bootstrap` and the host's CA bundle
//! (the AWS clients read it through `SSL_CERT_FILE`). By default the image is *assembled*: the
//! layer and the image config are written here, with no timestamps and fixed owners and modes,
//! and handed to the engine with `POST /images/load`. The image ID is the SHA-256 of that config,
//! so the same binary, bundle and labels give the same ID on any machine, with or without a
//! build cache. `--builder classic` sends the same files plus a Dockerfile to the classic builder
//! (`POST /build`) instead; its IDs repeat only while the engine's build cache holds the steps,
//! because every step it commits records the time and a fresh container id.
//!
//! Pushing goes to the local registry (`cargo xtask local up`) for a `local` environment and to
//! ECR for an `aws` one. Tags are immutable: `<commit12>-<model version>`, with `-debug` for a
//! dev-profile binary and `-dirty-<id8>` for an uncommitted tree, so one tag never names two
//! different images.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, ImportImageOptionsBuilder, PushImageOptionsBuilder,
    TagImageOptionsBuilder,
};
use clap::{Args, Subcommand, ValueEnum};
use futures_util::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::Target;
use crate::ctx::{Ctx, LocalState};
use crate::{build, util};

/// Where the CA bundle is read on the host and written in the image (Debian's path, which the
/// AWS clients also look at when `SSL_CERT_FILE` is unset).
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The image's entrypoint, where Lambda's custom runtimes expect it.
pub const ENTRYPOINT: &str = "/bootstrap";
/// Label holding the git commit the image was built from.
pub const LABEL_REVISION: &str = "org.opencontainers.image.revision";
/// Label holding where the source lives.
pub const LABEL_SOURCE: &str = "org.opencontainers.image.source";
/// Label holding the model version the image was built for.
pub const LABEL_MODEL_VERSION: &str = "taxi-duration.model-version";
/// Label holding the cargo profile of the binary.
pub const LABEL_PROFILE: &str = "taxi-duration.profile";
/// Manifest media types a registry may answer with for our single-platform image.
pub const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";

/// The failures people need told how to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// No Docker engine answered.
    #[error(
        "no Docker engine answers at {host} ({source}): start it (`sudo systemctl start docker`, or `sudo dockerd &`), \
         or point DOCKER_HOST at a running one"
    )]
    NoEngine {
        host: String,
        source: bollard::errors::Error,
    },
    /// The local environment has no registry running.
    #[error("no local registry {where_}: start one with `cargo xtask local up`")]
    RegistryDown { where_: String },
    /// The ECR repository does not exist yet.
    #[error(
        "ECR repository `{repository}` does not exist in {region}: `cargo xtask deploy --env {env}` creates it \
         (or set `ecr_repository` in config/env/{env}.toml)"
    )]
    RepositoryMissing {
        repository: String,
        region: String,
        env: String,
    },
    /// The ECR token expired before or during the push.
    #[error(
        "the ECR authorization token {detail}: run the command again for a fresh one (tokens last 12 hours), \
         and check the machine's clock"
    )]
    TokenExpired { detail: String },
    /// The host has no CA bundle to copy into the image.
    #[error("no CA bundle at {path}: install it with `apt-get install -y ca-certificates`")]
    NoCaBundle { path: String },
}

/// Build or push the Lambda container image.
#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    cmd: ImageCmd,
}

#[derive(Debug, Subcommand)]
enum ImageCmd {
    /// Build the image into the local Docker engine and print its ID, size and tags.
    Build(ImageOptions),
    /// Build the image (a no-op when nothing changed), then push it to the environment's registry
    /// and print the digest.
    Push(ImageOptions),
}

/// How the image is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Builder {
    /// Write the layer and config here and load them: the same inputs give the same ID anywhere.
    #[default]
    Assemble,
    /// The engine's classic builder with a Dockerfile: IDs repeat only through its build cache.
    Classic,
}

/// What goes into the image.
#[derive(Debug, Clone, Default, Args)]
pub struct ImageOptions {
    /// Use a dev-profile `bootstrap` (faster to build, larger image).
    #[arg(long)]
    pub debug: bool,
    /// Model version for the label and the tag [default: the newest local artifact's, else "unknown"].
    #[arg(long)]
    pub model_version: Option<String>,
    /// A model artifact to take the version from.
    #[arg(long, conflicts_with = "model_version")]
    pub model: Option<PathBuf>,
    /// How the image is built.
    #[arg(long, value_enum, default_value_t)]
    pub builder: Builder,
}

/// An image in the local engine.
#[derive(Debug, Clone, Serialize)]
pub struct BuiltImage {
    /// The image ID, `sha256:<hex>`.
    pub id: String,
    /// Uncompressed size in bytes, as the engine reports it.
    pub size: u64,
    /// The repository name (the environment's `ecr_repository`).
    pub repository: String,
    /// The immutable tag.
    pub tag: String,
    /// Every local reference: `<repository>:<tag>` and `<repository>:latest`.
    pub tags: Vec<String>,
    /// The git commit, or "unknown".
    pub revision: String,
    /// True when the tree had uncommitted changes.
    pub dirty: bool,
    /// The model version label.
    pub model_version: String,
    /// The binary's cargo profile.
    pub profile: String,
    /// The image's labels.
    pub labels: BTreeMap<String, String>,
    /// How it was built.
    pub builder: Builder,
    /// True when the engine already had this exact image and nothing was loaded.
    pub reused: bool,
    /// Seconds spent on the image after cargo finished: reading, hashing, loading, tagging.
    pub image_seconds: f64,
}

impl fmt::Display for BuiltImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reused = if self.reused { ", unchanged" } else { "" };
        writeln!(
            f,
            "image {} ({:.1} MB, {} bootstrap{reused}, {:.2} s after cargo)",
            self.id,
            self.size as f64 / 1e6,
            self.profile,
            self.image_seconds
        )?;
        writeln!(
            f,
            "  model version {}, commit {}{}",
            self.model_version,
            self.revision,
            if self.dirty { " (dirty)" } else { "" }
        )?;
        for tag in &self.tags {
            writeln!(f, "  tag {tag}")?;
        }
        Ok(())
    }
}

/// An image in a registry.
#[derive(Debug, Clone, Serialize)]
pub struct PushedImage {
    /// The local image ID that was pushed.
    pub image_id: String,
    /// `host[:port]` of the registry.
    pub registry: String,
    /// The repository inside the registry.
    pub repository: String,
    /// `<registry>/<repository>:<tag>`.
    pub tag: String,
    /// The manifest digest, `sha256:<hex>`.
    pub digest: String,
    /// `<registry>/<repository>@<digest>`: what a Lambda function should point at.
    pub uri_with_digest: String,
    /// False when the registry already held the tag and nothing was sent.
    pub pushed: bool,
}

impl fmt::Display for PushedImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.pushed {
            "pushed"
        } else {
            "already in the registry:"
        };
        writeln!(f, "{what} {}", self.tag)?;
        write!(f, "  digest {}\n  {}", self.digest, self.uri_with_digest)
    }
}

impl ImageArgs {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self.cmd {
            ImageCmd::Build(opts) => {
                let built = build_image(ctx, &opts).await?;
                ctx.emit(&built)
            }
            ImageCmd::Push(opts) => {
                let built = build_image(ctx, &opts).await?;
                if ctx.dry_run {
                    let target = registry_target(ctx).await?;
                    ctx.note(format!(
                        "dry run: would push {} as {}:{}",
                        built.id,
                        target.remote(),
                        built.tag
                    ));
                    return Ok(());
                }
                let pushed = push_image(ctx, &built).await?;
                ctx.emit(&pushed)
            }
        }
    }
}

/// Connects to the Docker engine (`DOCKER_HOST` or the local socket) and agrees on an API
/// version, since engines as old as 20.10 (API 1.41) must work.
pub async fn docker() -> Result<Docker, ImageError> {
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let no_engine = |source| ImageError::NoEngine {
        host: host.clone(),
        source,
    };
    let docker = Docker::connect_with_defaults().map_err(no_engine)?;
    let docker = docker.negotiate_version().await.map_err(no_engine)?;
    docker.ping().await.map_err(no_engine)?;
    Ok(docker)
}

/// Builds the bootstrap binary and the image, and tags it `<repository>:<tag>` and `:latest`.
/// Nothing is loaded when the engine already holds the same image.
pub async fn build_image(ctx: &Ctx, opts: &ImageOptions) -> anyhow::Result<BuiltImage> {
    let docker = docker().await?;
    let root = ctx.root.clone();
    let release = !opts.debug;
    let binary = tokio::task::spawn_blocking(move || build::build_lambda(&root, release)).await??;
    // Timed from here: what the image adds on top of cargo's own (no-op) build.
    let started = std::time::Instant::now();
    let bootstrap =
        std::fs::read(&binary.path).with_context(|| format!("read {}", binary.path.display()))?;
    let ca_bundle = std::fs::read(CA_BUNDLE).map_err(|_| ImageError::NoCaBundle {
        path: CA_BUNDLE.into(),
    })?;

    let revision = util::git_commit(&ctx.root).unwrap_or_else(|| "unknown".into());
    let dirty = util::git_dirty(&ctx.root);
    let model_version = match (&opts.model_version, &opts.model) {
        (Some(v), _) => v.clone(),
        (None, Some(path)) => {
            model::artifact::Artifact::load(path)
                .with_context(|| format!("read the model version from {}", path.display()))?
                .version
        }
        (None, None) => newest_local_model_version(ctx).unwrap_or_else(|| "unknown".into()),
    };
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_REVISION.to_string(), revision.clone());
    labels.insert(
        LABEL_SOURCE.to_string(),
        util::git_origin(&ctx.root).unwrap_or_else(|| "unknown".into()),
    );
    labels.insert(LABEL_MODEL_VERSION.to_string(), model_version.clone());
    labels.insert(LABEL_PROFILE.to_string(), binary.profile.clone());
    let contents = ImageContents {
        bootstrap,
        ca_bundle,
        labels: labels.clone(),
    };

    let (id, reused) = match opts.builder {
        Builder::Assemble => load_assembled(&docker, &contents).await?,
        Builder::Classic => (build_classic(&docker, &contents).await?, false),
    };

    let repository = ctx.env.ecr_repository.clone();
    let tag = immutable_tag(
        &revision,
        &model_version,
        opts.debug,
        dirty.then_some(id.as_str()),
    );
    let mut tags = Vec::new();
    for t in [tag.as_str(), "latest"] {
        docker
            .tag_image(
                &id,
                Some(
                    TagImageOptionsBuilder::new()
                        .repo(&repository)
                        .tag(t)
                        .build(),
                ),
            )
            .await
            .with_context(|| format!("tag {id} as {repository}:{t}"))?;
        tags.push(format!("{repository}:{t}"));
    }
    let inspect = docker
        .inspect_image(&id)
        .await
        .with_context(|| format!("inspect the new image {id}"))?;
    Ok(BuiltImage {
        id,
        size: inspect.size.unwrap_or_default().max(0) as u64,
        repository,
        tag,
        tags,
        revision,
        dirty,
        model_version,
        profile: binary.profile,
        labels,
        builder: opts.builder,
        reused,
        image_seconds: started.elapsed().as_secs_f64(),
    })
}

/// The immutable tag: `<commit12>-<model version>`, then `-debug` for a dev-profile binary and
/// `-dirty-<id8>` for a tree with uncommitted changes (whose content the commit does not pin).
pub fn immutable_tag(
    revision: &str,
    model_version: &str,
    debug: bool,
    dirty_image_id: Option<&str>,
) -> String {
    let commit: String = revision.chars().take(12).collect();
    let mut tag = format!("{commit}-{model_version}");
    if debug {
        tag.push_str("-debug");
    }
    if let Some(id) = dirty_image_id {
        let hex = id.strip_prefix("sha256:").unwrap_or(id);
        tag.push_str("-dirty-");
        tag.extend(hex.chars().take(8));
    }
    // Registry tags allow [A-Za-z0-9_.-], at most 128 characters; anything else becomes `_`.
    let mut tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    tag.truncate(128);
    tag
}

/// The version of the newest model artifact under `runs/` or `artifacts/` in the repository, or
/// `runs/` in the cache, by modification time. Unreadable artifacts are skipped with a note.
pub fn newest_local_model_version(ctx: &Ctx) -> Option<String> {
    let mut found = Vec::new();
    for dir in [
        ctx.root.join("runs"),
        ctx.root.join("artifacts"),
        ctx.cache.join("runs"),
    ] {
        find_files(&dir, model::artifact::FILE_NAME, 4, &mut found);
    }
    found.sort_by_key(|(mtime, _)| *mtime);
    for (_, path) in found.iter().rev() {
        match model::artifact::Artifact::load(path) {
            Ok(artifact) => return Some(artifact.version),
            Err(e) => ctx.note(format!("skipping model artifact {}: {e}", path.display())),
        }
    }
    None
}

fn find_files(
    dir: &Path,
    name: &str,
    depth: usize,
    out: &mut Vec<(std::time::SystemTime, PathBuf)>,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() && depth > 0 {
            find_files(&path, name, depth - 1, out);
        } else if meta.is_file() && entry.file_name() == name {
            out.push((meta.modified().unwrap_or(std::time::UNIX_EPOCH), path));
        }
    }
}

/// The files and labels that make up the image.
struct ImageContents {
    bootstrap: Vec<u8>,
    ca_bundle: Vec<u8>,
    labels: BTreeMap<String, String>,
}

/// Appends one entry with no timestamp and fixed owner, so the bytes depend on content only.
fn append(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    data: Option<&[u8]>,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mode(mode);
    match data {
        Some(bytes) => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(bytes.len() as u64);
            tar.append_data(&mut header, path, bytes)
        }
        None => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            tar.append_data(&mut header, path, std::io::empty())
        }
    }
}

/// The image's one layer: the bootstrap and the CA bundle with their parent folders.
fn layer_tar(contents: &ImageContents) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    append(&mut tar, "bootstrap", 0o755, Some(&contents.bootstrap))?;
    append(&mut tar, "etc/", 0o755, None)?;
    append(&mut tar, "etc/ssl/", 0o755, None)?;
    append(&mut tar, "etc/ssl/certs/", 0o755, None)?;
    append(
        &mut tar,
        CA_BUNDLE.trim_start_matches('/'),
        0o644,
        Some(&contents.ca_bundle),
    )?;
    tar.into_inner()
}

// The image config as the engine stores it. Struct fields serialise in declaration order and the
// labels are a BTreeMap, so the JSON (and with it the image ID) has one spelling per content.
#[derive(Serialize)]
struct ImageConfig<'a> {
    architecture: &'static str,
    os: &'static str,
    created: &'static str,
    config: RunConfig<'a>,
    rootfs: RootFs,
    history: [History; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig<'a> {
    entrypoint: [&'static str; 1],
    env: [String; 1],
    labels: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: [String; 1],
}

#[derive(Serialize)]
struct History {
    created: &'static str,
    created_by: &'static str,
}

/// The Unix epoch, standing in for a build time so that rebuilding changes nothing.
const EPOCH: &str = "1970-01-01T00:00:00Z";

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes the layer and config, and loads them unless the engine already holds the image.
/// Returns the image ID and whether it was already there.
async fn load_assembled(
    docker: &Docker,
    contents: &ImageContents,
) -> anyhow::Result<(String, bool)> {
    let layer = layer_tar(contents).context("write the image layer")?;
    let diff_id = sha256_hex(&layer);
    let config = serde_json::to_vec(&ImageConfig {
        architecture: "amd64",
        os: "linux",
        created: EPOCH,
        config: RunConfig {
            entrypoint: [ENTRYPOINT],
            env: [format!("SSL_CERT_FILE={CA_BUNDLE}")],
            labels: &contents.labels,
        },
        rootfs: RootFs {
            kind: "layers",
            diff_ids: [format!("sha256:{diff_id}")],
        },
        history: [History {
            created: EPOCH,
            created_by: "cargo xtask image build",
        }],
    })?;
    let id_hex = sha256_hex(&config);
    let id = format!("sha256:{id_hex}");
    if docker.inspect_image(&id).await.is_ok() {
        return Ok((id, true));
    }

    // The `docker save` layout: a manifest naming the config and the layer, no tags (they are
    // added afterwards, like a build's).
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": format!("{id_hex}.json"),
        "RepoTags": [],
        "Layers": [format!("{diff_id}/layer.tar")],
    }]))?;
    let mut archive = tar::Builder::new(Vec::new());
    append(&mut archive, &format!("{diff_id}/"), 0o755, None)?;
    append(
        &mut archive,
        &format!("{diff_id}/layer.tar"),
        0o644,
        Some(&layer),
    )?;
    append(
        &mut archive,
        &format!("{id_hex}.json"),
        0o644,
        Some(&config),
    )?;
    append(&mut archive, "manifest.json", 0o644, Some(&manifest))?;
    let archive = archive.into_inner()?;

    let mut stream = docker.import_image(
        ImportImageOptionsBuilder::new().quiet(true).build(),
        bollard::body_full(archive.into()),
        None,
    );
    while let Some(item) = stream.next().await {
        item.context("load the image into the Docker engine")?;
    }
    let loaded = docker
        .inspect_image(&id)
        .await
        .with_context(|| format!("the engine did not keep image {id}"))?;
    anyhow::ensure!(
        loaded.id.as_deref() == Some(id.as_str()),
        "the engine stored the image as {:?}, expected {id}",
        loaded.id
    );
    Ok((id, false))
}

/// The Dockerfile the classic builder gets; the labels come as build options.
const DOCKERFILE: &str = "FROM scratch\n\
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n\
COPY bootstrap /bootstrap\n\
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt\n\
ENTRYPOINT [\"/bootstrap\"]\n";

/// Builds with the engine's classic builder (`POST /build`, builder version 1).
async fn build_classic(docker: &Docker, contents: &ImageContents) -> anyhow::Result<String> {
    let mut tar = tar::Builder::new(Vec::new());
    append(&mut tar, "Dockerfile", 0o644, Some(DOCKERFILE.as_bytes()))?;
    append(&mut tar, "bootstrap", 0o755, Some(&contents.bootstrap))?;
    append(
        &mut tar,
        "ca-certificates.crt",
        0o644,
        Some(&contents.ca_bundle),
    )?;
    let context = tar.into_inner()?;
    let labels: HashMap<String, String> = contents.labels.clone().into_iter().collect();
    let options = BuildImageOptionsBuilder::new()
        .dockerfile("Dockerfile")
        .rm(true)
        .forcerm(true)
        .labels(&labels)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let mut id = None;
    let mut log = String::new();
    while let Some(item) = stream.next().await {
        let info = item.with_context(|| format!("classic build failed:\n{log}"))?;
        if let Some(line) = info.stream {
            log.push_str(&line);
        }
        if let Some(aux) = info.aux.and_then(|a| a.id) {
            id = Some(aux);
        }
    }
    id.with_context(|| format!("the classic builder reported no image ID:\n{log}"))
}

/// Where an image goes.
#[derive(Debug, Clone)]
pub struct RegistryTarget {
    /// `host[:port]`.
    pub registry: String,
    /// Repository name inside the registry.
    pub repository: String,
    /// Credentials for the push (none for the local registry).
    pub credentials: Option<DockerCredentials>,
    /// True for the plain-HTTP loopback registry.
    pub local: bool,
}

impl RegistryTarget {
    /// `<registry>/<repository>`.
    pub fn remote(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

/// The registry for the environment: the local registry for a `local` environment, ECR for `aws`.
pub async fn registry_target(ctx: &Ctx) -> anyhow::Result<RegistryTarget> {
    match ctx.env.target {
        Target::Local => {
            let registry = LocalState::read(&ctx.cache)?
                .and_then(|s| s.registry)
                .ok_or_else(|| ImageError::RegistryDown {
                    where_: format!("is recorded in {}", LocalState::path(&ctx.cache).display()),
                })?;
            check_local_registry(&registry).await?;
            Ok(RegistryTarget {
                registry,
                repository: ctx.env.ecr_repository.clone(),
                credentials: None,
                local: true,
            })
        }
        Target::Aws => {
            let sdk = ctx.aws().await?;
            Ok(ecr_target(&sdk, &ctx.env.ecr_repository, &ctx.env.name).await?)
        }
    }
}

/// Fails with [`ImageError::RegistryDown`] unless a registry answers on `/v2/`.
async fn check_local_registry(registry: &str) -> Result<(), ImageError> {
    if crate::registry::healthy(registry).await {
        Ok(())
    } else {
        Err(ImageError::RegistryDown {
            where_: format!("answers at {registry}"),
        })
    }
}

/// Decoded ECR credentials.
#[derive(Debug, Clone)]
pub struct EcrAuth {
    /// Always `AWS` today; taken from the token.
    pub username: String,
    /// The registry password.
    pub password: String,
    /// `https://<account>.dkr.ecr.<region>.amazonaws.com`.
    pub proxy_endpoint: String,
    /// When the token expires, in Unix seconds.
    pub expires_at: Option<i64>,
}

/// Splits an ECR authorization token: base64 of `user:password`.
pub fn decode_ecr_token(token: &str) -> anyhow::Result<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .context("ECR token is not base64")?;
    let text = String::from_utf8(raw).context("ECR token is not UTF-8")?;
    let (user, password) = text
        .split_once(':')
        .context("ECR token is not `user:password`")?;
    anyhow::ensure!(
        !user.is_empty() && !password.is_empty(),
        "ECR token has an empty user or password"
    );
    Ok((user.to_string(), password.to_string()))
}

/// `GetAuthorizationToken`, decoded.
pub async fn ecr_auth(ecr: &aws_sdk_ecr::Client) -> anyhow::Result<EcrAuth> {
    let out = ecr
        .get_authorization_token()
        .send()
        .await
        .context("ECR GetAuthorizationToken")?;
    let data = out
        .authorization_data()
        .first()
        .context("ECR returned no authorization data")?;
    let (username, password) = decode_ecr_token(
        data.authorization_token()
            .context("ECR returned no token")?,
    )?;
    Ok(EcrAuth {
        username,
        password,
        proxy_endpoint: data.proxy_endpoint().unwrap_or_default().to_string(),
        expires_at: data.expires_at().map(|t| t.secs()),
    })
}

/// The registry host and repository path of an ECR repository, from its URI, so that account
/// and region are never spelled out here.
pub async fn ecr_registry(
    ecr: &aws_sdk_ecr::Client,
    repository: &str,
    env: &str,
) -> anyhow::Result<(String, String)> {
    let described = ecr
        .describe_repositories()
        .repository_names(repository)
        .send()
        .await;
    let described = match described {
        Ok(out) => out,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_repository_not_found_exception()) =>
        {
            let region = ecr
                .config()
                .region()
                .map(|r| r.to_string())
                .unwrap_or_else(|| "the configured region".into());
            return Err(ImageError::RepositoryMissing {
                repository: repository.into(),
                region,
                env: env.into(),
            }
            .into());
        }
        Err(e) => {
            return Err(
                anyhow::Error::new(e).context(format!("ECR DescribeRepositories {repository}"))
            );
        }
    };
    let uri = described
        .repositories()
        .first()
        .and_then(|r| r.repository_uri())
        .with_context(|| format!("ECR returned no URI for repository {repository}"))?;
    let (registry, repo) = uri
        .split_once('/')
        .with_context(|| format!("ECR repository URI {uri} has no `/`"))?;
    Ok((registry.to_string(), repo.to_string()))
}

/// The ECR repository's registry and push credentials; an expired token is refused here rather
/// than halfway through a push.
pub async fn ecr_target(
    sdk: &aws_config::SdkConfig,
    repository: &str,
    env: &str,
) -> anyhow::Result<RegistryTarget> {
    let ecr = aws_sdk_ecr::Client::new(sdk);
    let (registry, repo) = ecr_registry(&ecr, repository, env).await?;
    let auth = ecr_auth(&ecr).await?;
    if let Some(expires) = auth.expires_at {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64;
        if expires <= now {
            return Err(ImageError::TokenExpired {
                detail: format!("from GetAuthorizationToken expired at Unix time {expires}"),
            }
            .into());
        }
    }
    Ok(RegistryTarget {
        registry,
        repository: repo,
        credentials: Some(DockerCredentials {
            username: Some(auth.username),
            password: Some(auth.password),
            serveraddress: Some(auth.proxy_endpoint),
            ..Default::default()
        }),
        local: false,
    })
}

/// Pushes the image's immutable tag to the environment's registry and returns the digest.
pub async fn push_image(ctx: &Ctx, image: &BuiltImage) -> anyhow::Result<PushedImage> {
    let target = registry_target(ctx).await?;
    push_to(ctx, &target, image).await
}

/// Pushes to a given registry, retrying transient failures with backoff.
pub async fn push_to(
    ctx: &Ctx,
    target: &RegistryTarget,
    image: &BuiltImage,
) -> anyhow::Result<PushedImage> {
    let docker = docker().await?;
    let remote = target.remote();
    docker
        .tag_image(
            &image.id,
            Some(
                TagImageOptionsBuilder::new()
                    .repo(&remote)
                    .tag(&image.tag)
                    .build(),
            ),
        )
        .await
        .with_context(|| format!("tag {} as {remote}:{}", image.id, image.tag))?;
    let reference = format!("{remote}:{}", image.tag);
    let progress = ctx.spinner(format!("pushing {reference}"));
    let mut delay = Duration::from_secs(1);
    let mut attempt = 1;
    let digest = loop {
        match push_once(&docker, target, &image.tag, &progress).await {
            Ok(digest) => break digest,
            Err(message) => match classify_push_error(&message, target) {
                PushFailure::Transient if attempt < 4 => {
                    progress.set_message(format!(
                        "pushing {reference} (retry {attempt} after: {message})"
                    ));
                    ctx.note(format!(
                        "push attempt {attempt} failed, retrying in {delay:?}: {message}"
                    ));
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                PushFailure::Known(e) => {
                    progress.finish_and_clear();
                    return Err(e.into());
                }
                _ => {
                    progress.finish_and_clear();
                    anyhow::bail!("push {reference} failed after {attempt} attempt(s): {message}");
                }
            },
        }
    };
    progress.finish_and_clear();
    Ok(PushedImage {
        image_id: image.id.clone(),
        registry: target.registry.clone(),
        repository: target.repository.clone(),
        uri_with_digest: format!("{remote}@{digest}"),
        tag: reference,
        digest,
        pushed: true,
    })
}

/// One push attempt; the digest comes from the engine's last status line,
/// `<tag>: digest: sha256:<hex> size: <n>`.
async fn push_once(
    docker: &Docker,
    target: &RegistryTarget,
    tag: &str,
    progress: &indicatif::ProgressBar,
) -> Result<String, String> {
    let mut stream = docker.push_image(
        &target.remote(),
        Some(PushImageOptionsBuilder::new().tag(tag).build()),
        target.credentials.clone(),
    );
    let mut digest = None;
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| match e {
            bollard::errors::Error::DockerStreamError { error } => error,
            other => other.to_string(),
        })?;
        if let Some(status) = &info.status {
            if let Some(d) = parse_push_digest(status) {
                digest = Some(d);
            }
            if let Some(p) = &info.progress_detail
                && let (Some(cur), Some(total)) = (p.current, p.total)
            {
                progress.set_message(format!(
                    "{status} {} {:.1}/{:.1} MB",
                    target.remote(),
                    cur as f64 / 1e6,
                    total as f64 / 1e6
                ));
            }
        }
    }
    digest.ok_or_else(|| "the engine finished the push without reporting a digest".to_string())
}

/// The digest in a push status line such as `abc-unknown: digest: sha256:... size: 528`.
pub fn parse_push_digest(status: &str) -> Option<String> {
    let rest = &status[status.find("digest: ")? + "digest: ".len()..];
    let digest = rest.split_whitespace().next()?;
    (digest.starts_with("sha256:") && digest.len() == 71).then(|| digest.to_string())
}

enum PushFailure {
    Known(ImageError),
    Permanent,
    Transient,
}

/// Sorts a push error into what a retry can fix and what it cannot.
fn classify_push_error(message: &str, target: &RegistryTarget) -> PushFailure {
    let m = message.to_ascii_lowercase();
    if m.contains("expired") {
        return PushFailure::Known(ImageError::TokenExpired {
            detail: format!("was refused by the registry: {message}"),
        });
    }
    if target.local && (m.contains("connection refused") || m.contains("no such host")) {
        return PushFailure::Known(ImageError::RegistryDown {
            where_: format!("answers at {}", target.registry),
        });
    }
    const PERMANENT: [&str; 9] = [
        "denied",
        "unauthorized",
        "authentication required",
        "name unknown",
        "does not exist",
        "not found",
        "already exists",
        "immutable",
        "invalid",
    ];
    if PERMANENT.iter().any(|p| m.contains(p)) {
        PushFailure::Permanent
    } else {
        PushFailure::Transient
    }
}

/// The digest the registry holds for `tag`, or `None` when it has no such tag.
pub async fn remote_digest(target: &RegistryTarget, tag: &str) -> anyhow::Result<Option<String>> {
    let scheme = if target.local { "http" } else { "https" };
    let url = format!(
        "{scheme}://{}/v2/{}/manifests/{tag}",
        target.registry, target.repository
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut req = client
        .head(&url)
        .header(reqwest::header::ACCEPT, MANIFEST_ACCEPT);
    if let Some(creds) = &target.credentials {
        req = req.basic_auth(
            creds.username.clone().unwrap_or_default(),
            creds.password.clone(),
        );
    }
    let resp = req.send().await.with_context(|| format!("HEAD {url}"))?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let resp = resp
        .error_for_status()
        .with_context(|| format!("HEAD {url}"))?;
    let digest = resp
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .with_context(|| format!("{url} answered without a Docker-Content-Digest header"))?;
    Ok(Some(digest.to_string()))
}

/// Builds the image (release binary, assembled) and pushes it unless the registry already
/// holds its tag.
pub async fn ensure_image(ctx: &Ctx) -> anyhow::Result<PushedImage> {
    ensure_image_with(ctx, &ImageOptions::default()).await
}

/// [`ensure_image`] with explicit options.
pub async fn ensure_image_with(ctx: &Ctx, opts: &ImageOptions) -> anyhow::Result<PushedImage> {
    let image = build_image(ctx, opts).await?;
    ensure_pushed(ctx, &image).await
}

/// Pushes a built image unless the environment's registry already holds its tag.
pub async fn ensure_pushed(ctx: &Ctx, image: &BuiltImage) -> anyhow::Result<PushedImage> {
    let target = registry_target(ctx).await?;
    if let Some(digest) = remote_digest(&target, &image.tag).await? {
        let remote = target.remote();
        return Ok(PushedImage {
            image_id: image.id.clone(),
            registry: target.registry,
            repository: target.repository,
            uri_with_digest: format!("{remote}@{digest}"),
            tag: format!("{remote}:{}", image.tag),
            digest,
            pushed: false,
        });
    }
    push_to(ctx, &target, image).await
}

/// An image the function can run: built, in the environment's registry, and on the emulator also
/// known to its ECR.
#[derive(Debug, Clone, Serialize)]
pub struct PublishedImage {
    /// What the function points at: `<repository uri>@<digest>` on AWS, `<repository uri>:<tag>`
    /// on the emulator (whose ECR holds the manifest under the tag).
    pub uri: String,
    /// `<repository>:<tag>` in the local engine, to run the function as a container locally.
    pub local_ref: String,
    /// The build.
    pub built: BuiltImage,
    /// The push (or the registry's copy, when it already had the tag).
    pub pushed: PushedImage,
}

impl fmt::Display for PublishedImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.pushed.pushed {
            "pushed"
        } else {
            "already in the registry"
        };
        write!(
            f,
            "image {} ({how}, {:.1} MB)",
            self.uri,
            self.built.size as f64 / 1e6
        )
    }
}

/// Builds the image from this checkout, pushes it unless the registry has it, and returns the URI
/// the function of the stack whose repository is `repository_name` / `repository_uri` runs.
/// Deploy, e2e and the pipeline call this.
pub async fn publish(
    ctx: &Ctx,
    repository_name: &str,
    repository_uri: &str,
    opts: &ImageOptions,
) -> anyhow::Result<PublishedImage> {
    let built = build_image(ctx, opts).await?;
    let pushed = ensure_pushed(ctx, &built).await?;
    let uri = if ctx.on_emulator()? {
        register_in_emulator_ecr(ctx, &pushed, repository_name, &built.tag).await?;
        format!("{repository_uri}:{}", built.tag)
    } else {
        pushed.uri_with_digest.clone()
    };
    Ok(PublishedImage {
        uri,
        local_ref: format!("{}:{}", built.repository, built.tag),
        built,
        pushed,
    })
}

/// The emulator's Lambda looks image URIs up in its own ECR, which does not share storage with the
/// local registry: put the pushed manifest there under the tag, so that the stack's function
/// points at an image that exists in the repository it names. A tag already there is kept.
pub async fn register_in_emulator_ecr(
    ctx: &Ctx,
    pushed: &PushedImage,
    repository: &str,
    tag: &str,
) -> anyhow::Result<()> {
    let url = format!(
        "http://{}/v2/{}/manifests/{}",
        pushed.registry, pushed.repository, pushed.digest
    );
    let resp = reqwest::Client::new()
        .get(&url)
        .header(reqwest::header::ACCEPT, MANIFEST_ACCEPT)
        .send()
        .await
        .with_context(|| format!("fetch the manifest from {url}"))?
        .error_for_status()?;
    let media = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let manifest = resp.text().await?;
    let ecr = aws_sdk_ecr::Client::new(&ctx.aws().await?);
    let exists = ecr
        .describe_images()
        .repository_name(repository)
        .image_ids(
            aws_sdk_ecr::types::ImageIdentifier::builder()
                .image_tag(tag)
                .build(),
        )
        .send()
        .await
        .is_ok();
    if !exists {
        ecr.put_image()
            .repository_name(repository)
            .image_manifest(manifest)
            .set_image_manifest_media_type(media)
            .image_tag(tag)
            .send()
            .await
            .with_context(|| {
                format!("register {tag} in the emulator's ECR repository {repository}")
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents() -> ImageContents {
        let labels = BTreeMap::from([(LABEL_MODEL_VERSION.to_string(), "abc".to_string())]);
        ImageContents {
            bootstrap: b"\x7fELF".to_vec(),
            ca_bundle: b"-----BEGIN CERTIFICATE-----".to_vec(),
            labels,
        }
    }

    #[test]
    fn layer_bytes_depend_on_content_only() {
        let a = layer_tar(&contents()).unwrap();
        let b = layer_tar(&contents()).unwrap();
        assert_eq!(a, b);
        let mut other = contents();
        other.bootstrap.push(0);
        assert_ne!(a, layer_tar(&other).unwrap());
    }

    #[test]
    fn layer_entries_have_no_time_and_root_owner() {
        let bytes = layer_tar(&contents()).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut paths = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let h = entry.header();
            assert_eq!(
                (h.mtime().unwrap(), h.uid().unwrap(), h.gid().unwrap()),
                (0, 0, 0)
            );
            paths.push((
                entry.path().unwrap().display().to_string(),
                h.mode().unwrap(),
            ));
        }
        assert_eq!(
            paths,
            [
                ("bootstrap".to_string(), 0o755),
                ("etc/".to_string(), 0o755),
                ("etc/ssl/".to_string(), 0o755),
                ("etc/ssl/certs/".to_string(), 0o755),
                ("etc/ssl/certs/ca-certificates.crt".to_string(), 0o644),
            ]
        );
    }

    #[test]
    fn tag_is_commit_and_model_with_suffixes() {
        let commit = "0123456789abcdef0123";
        assert_eq!(
            immutable_tag(commit, "5f3a", false, None),
            "0123456789ab-5f3a"
        );
        assert_eq!(
            immutable_tag(commit, "5f3a", true, None),
            "0123456789ab-5f3a-debug"
        );
        assert_eq!(
            immutable_tag(commit, "5f3a", false, Some("sha256:deadbeef99")),
            "0123456789ab-5f3a-dirty-deadbeef"
        );
        assert_eq!(
            immutable_tag(commit, "v1/x y", false, None),
            "0123456789ab-v1_x_y"
        );
    }

    #[test]
    fn push_digest_is_read_from_the_last_status_line() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            parse_push_digest(&format!("abc-unknown: digest: {d} size: 528")),
            Some(d)
        );
        assert_eq!(parse_push_digest("Pushed"), None);
        assert_eq!(parse_push_digest("x: digest: md5:12 size: 1"), None);
    }

    #[test]
    fn ecr_token_splits_at_the_first_colon() {
        let token = base64::engine::general_purpose::STANDARD.encode("AWS:pass:word");
        assert_eq!(
            decode_ecr_token(&token).unwrap(),
            ("AWS".to_string(), "pass:word".to_string())
        );
        assert!(decode_ecr_token("not base64!").is_err());
        let no_colon = base64::engine::general_purpose::STANDARD.encode("AWS");
        assert!(decode_ecr_token(&no_colon).is_err());
    }

    #[test]
    fn push_errors_are_sorted_into_retry_or_not() {
        let local = RegistryTarget {
            registry: "127.0.0.1:1".into(),
            repository: "r".into(),
            credentials: None,
            local: true,
        };
        let ecr = RegistryTarget {
            local: false,
            ..local.clone()
        };
        assert!(matches!(
            classify_push_error("net/http: TLS handshake timeout", &ecr),
            PushFailure::Transient
        ));
        assert!(matches!(
            classify_push_error(
                "received unexpected HTTP status: 503 Service Unavailable",
                &ecr
            ),
            PushFailure::Transient
        ));
        assert!(matches!(
            classify_push_error(
                "denied: Your authorization token has expired. Reauthenticate and try again.",
                &ecr
            ),
            PushFailure::Known(ImageError::TokenExpired { .. })
        ));
        assert!(matches!(
            classify_push_error("tag invalid: The image tag 'x' already exists", &ecr),
            PushFailure::Permanent
        ));
        assert!(matches!(
            classify_push_error(
                "Get \"http://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused",
                &local
            ),
            PushFailure::Known(ImageError::RegistryDown { .. })
        ));
    }
}
