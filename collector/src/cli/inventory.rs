//! `collector inventory`: prints the data inventory (every CDR field, its category,
//! protection, storage, readers and retention) for a configuration.
use anyhow::Context as _;

use super::InventoryArgs;
use crate::privacy::inventory::{render_json, render_text};
use crate::privacy::PrivacyConfig;

/// Runs `collector inventory`.
pub fn run(args: &InventoryArgs) -> anyhow::Result<()> {
    print!("{}", render(args)?);
    Ok(())
}

/// The register for `args`: the `[privacy]` table of `--config` (defaults without it),
/// as `text` or `json`.
pub fn render(args: &InventoryArgs) -> anyhow::Result<String> {
    let config = match &args.config {
        Some(path) => PrivacyConfig::load_agent_config(path)
            .with_context(|| format!("reading {}", path.display()))?,
        None => PrivacyConfig::default(),
    };
    match args.format.as_str() {
        "text" => Ok(render_text(&config)),
        "json" => Ok(render_json(&config)? + "\n"),
        other => anyhow::bail!("unknown format {other:?}: use text or json"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "[privacy]\nscope = \"t\"\n[privacy.fields]\nuser_agent = \"drop\"\n",
        )
        .unwrap();
        let args = |config: Option<std::path::PathBuf>, format: &str| InventoryArgs {
            config,
            format: format.to_owned(),
        };
        let json: serde_json::Value =
            serde_json::from_str(&render(&args(Some(path.clone()), "json")).unwrap()).unwrap();
        let ua = json["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "user_agent_caller")
            .unwrap();
        assert_eq!(ua["policy"], "drop");
        assert_eq!(ua["retention"], "never stored");
        assert!(render(&args(None, "text")).unwrap().contains("caller_user"));
        assert!(render(&args(None, "csv")).is_err());
        assert!(render(&args(Some(dir.path().join("missing.toml")), "text")).is_err());
    }
}
