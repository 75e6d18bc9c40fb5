//! `taxi-train --train FILE... [--val FILE...] [--out DIR]`: the training job alone, printing one
//! JSON object. `cargo xtask train` runs the same job with tracking and progress around it.

use std::path::PathBuf;
use std::process::ExitCode;

use model::train::{TrainJob, TrainParams};

fn main() -> ExitCode {
    let (mut train, mut val, mut out) = (Vec::new(), Vec::new(), None::<PathBuf>);
    let mut target: Option<&mut Vec<PathBuf>> = None;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--train" => target = Some(&mut train),
            "--val" => target = Some(&mut val),
            "--out" => {
                i += 1;
                out = args.get(i).map(PathBuf::from);
                target = None;
            }
            a if a.starts_with("--") => {
                eprintln!(
                    "unknown flag {a}: usage: taxi-train --train FILE... [--val FILE...] [--out DIR]"
                );
                return ExitCode::from(2);
            }
            a => match target.as_deref_mut() {
                Some(t) => t.push(PathBuf::from(a)),
                None => {
                    eprintln!("`{a}` follows no --train or --val");
                    return ExitCode::from(2);
                }
            },
        }
        i += 1;
    }
    let job = TrainJob {
        train,
        val,
        params: TrainParams::default(),
        git_commit: None,
    };
    match job.run() {
        Ok(outcome) => {
            let a = &outcome.artifact;
            let m = &a.metadata;
            let artifact = out.map(|dir| dir.join(&a.version).join(model::artifact::FILE_NAME));
            if let Some(Err(e)) = artifact.as_ref().map(|path| a.save(path)) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            let summary = serde_json::json!({
                "train_rows": outcome.train_report.rows_read,
                "train_kept": outcome.train_report.rows_kept,
                "val_rows": outcome.val_report.as_ref().map_or(0, |r| r.rows_read),
                "val_kept": outcome.val_report.as_ref().map_or(0, |r| r.rows_kept),
                "n_features": m.n_features,
                "rmse_train": m.train_metrics.rmse,
                "rmse_val": m.val_metrics.map(|v| v.rmse),
                "version": a.version,
                "artifact": artifact,
            });
            println!("{summary:#}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
