//! `cargo xtask image`: builds against the real Docker engine, pushes to a real registry, and
//! the ECR calls against the real moto server.

use std::collections::BTreeMap;
use std::path::Path;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use xtask::ctx::{Ctx, GlobalArgs, LocalState, OutputFormat};
use xtask::image::{self, Builder, BuiltImage, ImageError, ImageOptions};

use crate::{moto, registry};

/// A dev-environment context with its own cache folder (holding the local state file) and its
/// own repository name, so that tests running side by side never move each other's tags.
fn test_ctx(cache: &Path, registry: Option<&str>) -> Ctx {
    let global = GlobalArgs {
        env: "dev".into(),
        output: OutputFormat::Text,
        dry_run: false,
        yes: true,
        endpoint_url: None,
    };
    let mut ctx = Ctx::new(&global).unwrap();
    ctx.cache = cache.to_path_buf();
    ctx.env.ecr_repository = moto::unique("taxi-image-test");
    LocalState {
        endpoint: "http://127.0.0.1:9".into(),
        pid: None,
        kind: "external".into(),
        registry: registry.map(str::to_string),
        registry_pid: None,
    }
    .write(cache)
    .unwrap();
    ctx
}

fn debug_opts(model_version: &str) -> ImageOptions {
    ImageOptions {
        debug: true,
        model_version: Some(model_version.into()),
        ..Default::default()
    }
}

async fn docker() -> Docker {
    image::docker()
        .await
        .expect("these tests need the Docker engine")
}

/// Removes the image with every tag it has.
async fn remove(docker: &Docker, id: &str) {
    let opts = RemoveImageOptionsBuilder::new()
        .force(true)
        .noprune(false)
        .build();
    let _ = docker.remove_image(id, Some(opts), None).await;
}

/// Reads one file out of an image, through a created (never started) container.
async fn file_in_image(docker: &Docker, image_id: &str, path: &str) -> Vec<u8> {
    let name = moto::unique("taxi-image-read");
    let body = ContainerCreateBody {
        image: Some(image_id.to_string()),
        ..Default::default()
    };
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&name).build()),
            body,
        )
        .await
        .unwrap();
    let mut tar_bytes = Vec::new();
    let mut stream = docker.download_from_container(
        &name,
        Some(
            DownloadFromContainerOptionsBuilder::new()
                .path(path)
                .build(),
        ),
    );
    while let Some(chunk) = stream.next().await {
        tar_bytes.extend_from_slice(&chunk.unwrap());
    }
    docker
        .remove_container(
            &name,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .unwrap();
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    let mut entry = archive
        .entries()
        .unwrap()
        .next()
        .expect("the archive holds the file")
        .unwrap();
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut out).unwrap();
    out
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn assert_contract(docker: &Docker, ctx: &Ctx, built: &BuiltImage, model_version: &str) {
    let inspect = docker.inspect_image(&built.id).await.unwrap();
    let config = inspect.config.expect("image config");
    assert_eq!(config.entrypoint, Some(vec!["/bootstrap".to_string()]));
    assert!(
        config
            .env
            .unwrap_or_default()
            .contains(&"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt".to_string()),
        "SSL_CERT_FILE must point at the bundle"
    );
    let labels: BTreeMap<String, String> = config.labels.unwrap_or_default().into_iter().collect();
    let commit = xtask::util::git_commit(&ctx.root).expect("tests run in a git clone");
    assert_eq!(labels.get(image::LABEL_REVISION), Some(&commit));
    assert_eq!(
        labels.get(image::LABEL_MODEL_VERSION).map(String::as_str),
        Some(model_version)
    );
    assert!(labels.contains_key(image::LABEL_SOURCE));
    assert_eq!(inspect.os.as_deref(), Some("linux"));
    assert_eq!(inspect.architecture.as_deref(), Some("amd64"));

    // The tags name this image and follow `<commit12>-<model>-debug[-dirty-<id8>]`.
    let expected = format!(
        "{}-{model_version}{}",
        &commit[..12],
        if built.profile == "debug" {
            "-debug"
        } else {
            ""
        }
    );
    assert!(
        built.tag.starts_with(&expected),
        "tag {} should start with {expected}",
        built.tag
    );
    assert_eq!(built.dirty, built.tag.contains("-dirty-"));
    for tag in &built.tags {
        let tagged = docker.inspect_image(tag).await.unwrap();
        assert_eq!(
            tagged.id.as_deref(),
            Some(built.id.as_str()),
            "{tag} names another image"
        );
    }
    assert_eq!(built.size, inspect.size.unwrap() as u64);

    // The files are the host's CA bundle and the binary cargo built, byte for byte.
    let bundle = file_in_image(docker, &built.id, image::CA_BUNDLE).await;
    assert_eq!(bundle, std::fs::read(image::CA_BUNDLE).unwrap());
    let bootstrap = file_in_image(docker, &built.id, "/bootstrap").await;
    let on_disk = xtask::build::bootstrap_path(&ctx.root, built.profile == "release");
    assert_eq!(sha256(&bootstrap), sha256(&std::fs::read(on_disk).unwrap()));
}

#[tokio::test]
async fn debug_image_has_the_entrypoint_labels_bundle_and_binary() {
    let cache = tempfile::tempdir().unwrap();
    let ctx = test_ctx(cache.path(), None);
    let docker = docker().await;
    let version = moto::unique("contract");
    let built = image::build_image(&ctx, &debug_opts(&version))
        .await
        .unwrap();
    assert_contract(&docker, &ctx, &built, &version).await;
    remove(&docker, &built.id).await;
}

#[tokio::test]
async fn same_inputs_give_the_same_image_id_even_without_a_cache() {
    let cache = tempfile::tempdir().unwrap();
    let ctx = test_ctx(cache.path(), None);
    let docker = docker().await;
    let opts = debug_opts(&moto::unique("repro"));
    let first = image::build_image(&ctx, &opts).await.unwrap();
    assert!(!first.reused, "a new model version label makes a new image");
    let second = image::build_image(&ctx, &opts).await.unwrap();
    assert_eq!(second.id, first.id);
    assert!(second.reused, "an unchanged rebuild loads nothing");
    eprintln!(
        "image time after cargo: first build {:.2} s, unchanged rebuild {:.2} s",
        first.image_seconds, second.image_seconds
    );
    assert!(
        second.image_seconds < 5.0,
        "an unchanged rebuild took {:.2} s beyond cargo, the target is under 5 s",
        second.image_seconds
    );

    // With the image and every tag gone, nothing is cached: the ID must still come out the same.
    remove(&docker, &first.id).await;
    assert!(
        docker.inspect_image(&first.id).await.is_err(),
        "the image was removed"
    );
    let third = image::build_image(&ctx, &opts).await.unwrap();
    assert_eq!(third.id, first.id);
    assert!(!third.reused);

    // A different label value is a different image.
    let other = image::build_image(&ctx, &debug_opts(&moto::unique("repro-other")))
        .await
        .unwrap();
    assert_ne!(other.id, first.id);
    remove(&docker, &first.id).await;
    remove(&docker, &other.id).await;
}

#[tokio::test]
async fn classic_builder_makes_the_same_contract() {
    let cache = tempfile::tempdir().unwrap();
    let ctx = test_ctx(cache.path(), None);
    let docker = docker().await;
    let version = moto::unique("classic");
    let opts = ImageOptions {
        builder: Builder::Classic,
        ..debug_opts(&version)
    };
    let built = image::build_image(&ctx, &opts).await.unwrap();
    assert_contract(&docker, &ctx, &built, &version).await;
    // The classic builder repeats an ID only through its cache of the previous steps.
    let again = image::build_image(&ctx, &opts).await.unwrap();
    assert_eq!(again.id, built.id);
    remove(&docker, &built.id).await;
}

#[tokio::test]
async fn release_image_is_under_15_mb() {
    let cache = tempfile::tempdir().unwrap();
    let ctx = test_ctx(cache.path(), None);
    let docker = docker().await;
    let version = moto::unique("release");
    let opts = ImageOptions {
        model_version: Some(version.clone()),
        ..Default::default()
    };
    let built = image::build_image(&ctx, &opts).await.unwrap();
    assert_eq!(built.profile, "release");
    assert_contract(&docker, &ctx, &built, &version).await;
    eprintln!("release image: {} bytes", built.size);
    assert!(
        built.size < 15_000_000,
        "release image is {} bytes, the target is under 15 MB",
        built.size
    );
    remove(&docker, &built.id).await;
}

/// The manifest the registry serves for `reference`, fetched over plain HTTP, and its digest.
async fn manifest(registry: &str, repository: &str, reference: &str) -> (String, Vec<u8>, String) {
    let url = format!("http://{registry}/v2/{repository}/manifests/{reference}");
    let resp = reqwest::Client::new()
        .get(&url)
        .header("Accept", image::MANIFEST_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "GET {url}");
    let media_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    let digest = resp.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string();
    (digest, resp.bytes().await.unwrap().to_vec(), media_type)
}

#[tokio::test]
async fn push_to_a_local_registry_gives_the_digest_the_registry_serves() {
    let reg = registry::start().await;
    let cache = tempfile::tempdir().unwrap();
    let ctx = test_ctx(cache.path(), Some(&reg.addr));
    let docker = docker().await;
    let built = image::build_image(&ctx, &debug_opts(&moto::unique("push")))
        .await
        .unwrap();
    let pushed = image::push_image(&ctx, &built).await.unwrap();
    assert!(pushed.pushed);
    assert_eq!(
        pushed.tag,
        format!("{}/{}:{}", reg.addr, ctx.env.ecr_repository, built.tag)
    );
    assert_eq!(
        pushed.uri_with_digest,
        format!("{}/{}@{}", reg.addr, ctx.env.ecr_repository, pushed.digest)
    );

    let (served, body, media_type) = manifest(&reg.addr, &ctx.env.ecr_repository, &built.tag).await;
    assert_eq!(
        served, pushed.digest,
        "the registry serves another manifest than the push reported"
    );
    assert_eq!(
        format!("sha256:{}", sha256(&body)),
        pushed.digest,
        "the digest is the manifest's SHA-256"
    );
    assert!(
        image::MANIFEST_ACCEPT.contains(&media_type),
        "unexpected manifest type {media_type}"
    );
    // The manifest's config is our image: its digest is the image ID.
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["config"]["digest"].as_str(), Some(built.id.as_str()));
    let compressed: u64 = json["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    eprintln!(
        "pushed {} ({} bytes uncompressed, {compressed} bytes of compressed layers)",
        pushed.digest, built.size
    );

    // ensure_image finds the tag already there and sends nothing.
    let opts = ImageOptions {
        model_version: Some(built.model_version.clone()),
        ..debug_opts("")
    };
    let ensured = image::ensure_image_with(&ctx, &opts).await.unwrap();
    assert!(!ensured.pushed, "the tag was in the registry already");
    assert_eq!(ensured.digest, pushed.digest);
    remove(&docker, &built.id).await;
}

#[tokio::test]
async fn push_without_a_local_registry_says_how_to_start_one() {
    let cache = tempfile::tempdir().unwrap();
    let ctx = test_ctx(cache.path(), None);
    let err = image::registry_target(&ctx).await.unwrap_err();
    assert!(
        matches!(err.downcast_ref(), Some(ImageError::RegistryDown { .. })),
        "{err:#}"
    );
    assert!(
        format!("{err:#}").contains("cargo xtask local up"),
        "{err:#}"
    );

    // A registry recorded in the state file that no longer runs.
    let dead = format!("127.0.0.1:{}", moto::free_port());
    let ctx = test_ctx(cache.path(), Some(&dead));
    let err = image::registry_target(&ctx).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("cargo xtask local up") && format!("{err:#}").contains(&dead),
        "{err:#}"
    );
}

#[tokio::test]
async fn no_docker_engine_says_how_to_start_it() {
    // Each test runs in its own process under nextest, so the variable reaches no other test.
    unsafe { std::env::set_var("DOCKER_HOST", "unix:///nonexistent/docker.sock") };
    let err = image::docker().await.unwrap_err();
    assert!(matches!(err, ImageError::NoEngine { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("/nonexistent/docker.sock") && msg.contains("start"),
        "{msg}"
    );
}

#[tokio::test]
async fn the_container_starts_the_bootstrap() {
    let cache = tempfile::tempdir().unwrap();
    let ctx = test_ctx(cache.path(), None);
    let docker = docker().await;
    let built = image::build_image(&ctx, &debug_opts(&moto::unique("smoke")))
        .await
        .unwrap();
    let name = moto::unique("taxi-image-smoke");
    // No Runtime API variables: a Lambda runtime must start and then fail on their absence.
    let body = ContainerCreateBody {
        image: Some(built.id.clone()),
        ..Default::default()
    };
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&name).build()),
            body,
        )
        .await
        .unwrap();
    docker
        .start_container(
            &name,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .unwrap();
    let mut waited = docker.wait_container(
        &name,
        None::<bollard::query_parameters::WaitContainerOptions>,
    );
    // A non-zero exit arrives as an error carrying the code.
    let code = match waited.next().await.expect("a wait result") {
        Ok(r) => r.status_code,
        Err(bollard::errors::Error::DockerContainerWaitError { code, .. }) => code,
        Err(e) => panic!("wait for {name}: {e}"),
    };
    let mut logs = String::new();
    let mut stream = docker.logs(
        &name,
        Some(LogsOptionsBuilder::new().stdout(true).stderr(true).build()),
    );
    while let Some(line) = stream.next().await {
        logs.push_str(&line.unwrap().to_string());
    }
    docker
        .remove_container(
            &name,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .unwrap();
    eprintln!("bootstrap exited with {code}; output:\n{logs}");
    // 126/127: the engine could not execute the entrypoint at all.
    assert!(
        code != 126 && code != 127,
        "the entrypoint did not run (exit {code}): {logs}"
    );
    if code != 0 {
        assert!(
            !logs.trim().is_empty(),
            "a failing bootstrap should say why"
        );
    }
    remove(&docker, &built.id).await;
}

fn ecr_client(sdk: &aws_config::SdkConfig) -> aws_sdk_ecr::Client {
    aws_sdk_ecr::Client::new(sdk)
}

#[tokio::test]
async fn ecr_token_from_moto_decodes_to_docker_credentials() {
    let sdk = xtask::ctx::aws_config_for("us-east-1", Some(&moto::moto().endpoint))
        .await
        .unwrap();
    let auth = image::ecr_auth(&ecr_client(&sdk)).await.unwrap();
    assert_eq!(auth.username, "AWS");
    assert!(
        auth.password.ends_with("-auth-token"),
        "moto's password is `<account>-auth-token`: {}",
        auth.password
    );
    assert!(
        auth.proxy_endpoint.starts_with("https://")
            && auth.proxy_endpoint.contains(".dkr.ecr.us-east-1.")
    );
}

#[tokio::test]
async fn ecr_registry_comes_from_the_repository_uri() {
    let sdk = xtask::ctx::aws_config_for("us-east-1", Some(&moto::moto().endpoint))
        .await
        .unwrap();
    let ecr = ecr_client(&sdk);
    let repo = moto::unique("taxi-ecr");
    ecr.create_repository()
        .repository_name(&repo)
        .send()
        .await
        .unwrap();
    let (registry, repository) = image::ecr_registry(&ecr, &repo, "stg").await.unwrap();
    assert_eq!(repository, repo);
    assert!(
        registry.ends_with(".dkr.ecr.us-east-1.amazonaws.com"),
        "{registry}"
    );
    let account = registry.split('.').next().unwrap();
    assert!(
        account.len() == 12 && account.chars().all(|c| c.is_ascii_digit()),
        "{registry}"
    );

    // moto's token says it expired in 2015: the push is refused before it starts, clearly.
    let err = image::ecr_target(&sdk, &repo, "stg").await.unwrap_err();
    assert!(
        matches!(err.downcast_ref(), Some(ImageError::TokenExpired { .. })),
        "{err:#}"
    );
    assert!(format!("{err:#}").contains("expired"), "{err:#}");
}

#[tokio::test]
async fn missing_ecr_repository_says_deploy_creates_it() {
    let sdk = xtask::ctx::aws_config_for("us-east-1", Some(&moto::moto().endpoint))
        .await
        .unwrap();
    let repo = moto::unique("taxi-ecr-missing");
    let err = image::ecr_target(&sdk, &repo, "stg").await.unwrap_err();
    assert!(
        matches!(
            err.downcast_ref(),
            Some(ImageError::RepositoryMissing { .. })
        ),
        "{err:#}"
    );
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&repo) && msg.contains("cargo xtask deploy --env stg"),
        "{msg}"
    );
}

#[test]
fn newest_local_artifact_gives_the_model_version() {
    use model::artifact::{Artifact, CategoricalBlock, NumericCoef};
    let cache = tempfile::tempdir().unwrap();
    let mut ctx = test_ctx(cache.path(), None);
    // Keep the clone's own runs/ out of this test.
    ctx.root = cache.path().join("root");
    assert_eq!(image::newest_local_model_version(&ctx), None);

    let artifact = |intercept: f64| {
        let mut a = Artifact {
            version: String::new(),
            features: model::FeatureSpec::default(),
            intercept,
            numeric: vec![NumericCoef {
                term: model::Numeric::TripDistance,
                coef: 2.0,
            }],
            categorical: vec![CategoricalBlock {
                term: model::Categorical::PuDo,
                vocabulary: vec!["1_2".into()],
                coef: vec![0.5],
            }],
            metadata: Default::default(),
        };
        a.version = a.content_version();
        a
    };
    let old = artifact(1.0);
    old.save(&cache.path().join("runs/a/model.json")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let new = artifact(2.0);
    new.save(&cache.path().join("runs/b/model.json")).unwrap();
    assert_ne!(old.version, new.version);
    assert_eq!(image::newest_local_model_version(&ctx), Some(new.version));
}
