//! What the shipped binary is made of.

/// Training pulls in polars and linfa; the function only predicts, so none of it may reach the
/// `bootstrap` binary (it would add megabytes and cold-start time).
#[test]
fn the_function_depends_on_no_training_code() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "--offline",
            "-p",
            "lambda",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    assert!(
        tree.contains("taxi-duration-model"),
        "the tree should list the model crate:\n{tree}"
    );
    for heavy in ["polars", "linfa", "ndarray", "arrow"] {
        let found: Vec<&str> = tree.lines().filter(|l| l.starts_with(heavy)).collect();
        assert!(
            found.is_empty(),
            "the lambda depends on {found:?}: keep training behind model's `train` feature"
        );
    }
}
