//! The `pinv` binary's commands.

use std::process::Command;

use serde_json::Value;

use crate::helpers::*;

fn pinv() -> Command {
    pinv_command()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn decode(token: &str, secret: &str, aud: Option<&str>) -> Value {
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    match aud {
        Some(a) => v.set_audience(&[a]),
        None => v.validate_aud = false,
    }
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        &v,
    )
    .expect("the minted token verifies with the secret")
    .claims
}

#[test]
fn token_command_mints_a_token_that_verifies_with_the_secret() {
    let out = pinv()
        .args([
            "token", "--source", "billing", "--source", "*", "--ttl", "2h",
        ])
        .env("PINV_JWT_SECRET", SECRET)
        .env("PINV_JWT_ISSUER", "pinv-tests")
        .env("PINV_JWT_AUDIENCE", "pinv")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let claims = decode(token.trim(), SECRET, Some("pinv"));
    assert_eq!(claims["sources"], serde_json::json!(["billing", "*"]));
    assert_eq!(claims["iss"], "pinv-tests");
    assert_eq!(claims["aud"], "pinv");
    let exp = claims["exp"].as_u64().unwrap();
    let iat = claims["iat"].as_u64().unwrap();
    assert_eq!(exp - iat, 7200);
    assert!(iat.abs_diff(now()) < 60);
}

#[test]
fn token_command_with_admin_adds_the_admin_claim() {
    let out = pinv()
        .args(["token", "--admin"])
        .env("PINV_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let token = String::from_utf8(out.stdout).unwrap();
    let claims = decode(token.trim(), SECRET, None);
    assert_eq!(claims["pinv_admin"], true);
    assert_eq!(claims["sources"], serde_json::json!([]));
    // Without --admin the claim is absent.
    let out = pinv()
        .args(["token", "--source", "billing"])
        .env("PINV_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    let plain = decode(String::from_utf8(out.stdout).unwrap().trim(), SECRET, None);
    assert!(plain.get("pinv_admin").is_none(), "{plain}");
}

#[test]
fn token_command_without_a_secret_fails_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = pinv()
        .args(["token", "--source", "billing"])
        .env("PINV_STORE", dir.path())
        .output()
        .unwrap();
    let err = refused(&out);
    assert!(err.contains("PINV_JWT_SECRET"), "{err}");
}

#[test]
fn token_command_refuses_a_bad_ttl() {
    let out = pinv()
        .args(["token", "--source", "billing", "--ttl", "soon"])
        .env("PINV_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    let err = refused(&out);
    assert!(err.contains("--ttl"), "{err}");
}

#[test]
fn bad_environment_names_the_variable() {
    let out = pinv()
        .args(["serve"])
        .env("PINV_BIND", "not-an-address")
        .output()
        .unwrap();
    let err = refused(&out);
    assert!(err.contains("PINV_BIND"), "{err}");
}

#[test]
fn unreachable_mongodb_stops_the_start_with_a_store_error() {
    let out = pinv()
        .args([
            "serve",
            "--dev",
            "--bind",
            "127.0.0.1:0",
            "--store",
            "mongodb://127.0.0.1:1",
        ])
        .env("PINV_RULES_DIR", rules_dir())
        .output()
        .unwrap();
    let err = refused(&out);
    assert!(err.contains("cannot open the store"), "{err}");
    // The error comes with its causes, one per line after "Caused by:".
    assert!(err.contains("\n\nCaused by:\n"), "{err}");
    // ...and each cause once: not in the headline too.
    let headline = err.lines().find(|l| l.starts_with("Error: ")).unwrap();
    assert_eq!(headline, "Error: cannot open the store", "{err}");
    // The chain reaches the driver's own reason: what PINV was doing, then why it failed.
    let causes: Vec<&str> = err
        .split("Caused by:")
        .nth(1)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        causes.first().copied(),
        Some("0: store unavailable: cannot reach MongoDB"),
        "{err}"
    );
    let driver = causes.get(1).copied().unwrap_or_default();
    assert!(
        driver.starts_with("1: ") && driver.contains("127.0.0.1:1"),
        "{err}"
    );
}

#[test]
fn serve_without_any_key_and_without_dev_refuses_to_start() {
    let out = pinv()
        .args(["serve", "--bind", "127.0.0.1:0", "--store", "memory"])
        .env("PINV_RULES_DIR", rules_dir())
        .output()
        .unwrap();
    let err = refused(&out);
    assert!(err.contains("PINV_JWT_SECRET"), "{err}");
}

#[test]
fn check_rules_accepts_the_repository_rules() {
    let out = pinv()
        .args(["check-rules"])
        .arg(rules_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid merge rules"));
}

#[test]
fn check_rules_warns_about_addresses_merged_field_by_field() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(rules_dir()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        // The shipped rules with the old default: contact media merged field by field.
        let text = text.replacen(
            "key = [\"contactType\"]\nelement_strategy = \"priority\"",
            "key = [\"contactType\"]",
            1,
        );
        std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
    }
    let out = pinv()
        .args(["check-rules"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a warning is not an error: {err}");
    assert!(
        err.contains("warning: 20-fields.toml: field \"relatedParty.partyOrPartyRole.contactMedium\".element_strategy"),
        "{err}"
    );
    let shipped = pinv()
        .args(["check-rules"])
        .arg(rules_dir())
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&shipped.stderr).contains("warning"));
}

#[test]
fn check_rules_reports_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), "this is = = not toml").unwrap();
    let out = pinv()
        .args(["check-rules"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = refused(&out);
    assert!(err.contains("bad.toml"), "{err}");
}

#[test]
fn serve_with_invalid_rules_stops_with_the_rules_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), "this is = = not toml").unwrap();
    let out = pinv()
        .args([
            "serve",
            "--dev",
            "--bind",
            "127.0.0.1:0",
            "--store",
            "memory",
            "--rules-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = refused(&out);
    assert!(err.contains("bad.toml"), "{err}");
}

#[test]
fn invalid_variable_stops_the_start_naming_the_variable_and_its_flag() {
    let out = pinv()
        .args(["serve", "--dev", "--store", "memory"])
        .env("PINV_MONGODB_TIMEOUT_MS", "soon")
        .output()
        .unwrap();
    let err = refused(&out);
    assert!(
        err.contains("PINV_MONGODB_TIMEOUT_MS (--mongodb-timeout-ms): 'soon' is not a positive number of milliseconds"),
        "{err}"
    );
}

#[test]
fn flag_wins_over_its_variable() {
    let out = pinv()
        .args(["token", "--source", "billing", "--jwt-issuer", "from-flag"])
        .env("PINV_JWT_SECRET", SECRET)
        .env("PINV_JWT_ISSUER", "from-env")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let token = String::from_utf8(out.stdout).unwrap();
    assert_eq!(decode(token.trim(), SECRET, None)["iss"], "from-flag");

    // A valid flag hides an invalid variable, and an empty variable counts as unset: the
    // start goes on to the next problem, the missing key.
    let out = pinv()
        .args(["serve", "--max-body-bytes", "10", "--store", "memory"])
        .env("PINV_MAX_BODY_BYTES", "lots")
        .env("PINV_BIND", "")
        .env("PINV_RULES_DIR", rules_dir())
        .output()
        .unwrap();
    let err = refused(&out);
    assert!(err.contains("no JWT key configured"), "{err}");
    assert!(
        !err.contains("PINV_MAX_BODY_BYTES") && !err.contains("PINV_BIND"),
        "{err}"
    );
}

#[test]
fn secret_is_refused_on_the_command_line() {
    let out = pinv()
        .args(["token", "--source", "billing", SECRET])
        .output()
        .unwrap();
    let err = refused(&out);
    assert!(err.contains("PINV_JWT_SECRET only"), "{err}");
    assert!(!err.contains(SECRET), "{err}");
}

#[test]
fn generate_help_offers_only_what_generate_uses() {
    let out = pinv().args(["generate", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--store") && help.contains("--rules-dir"),
        "{help}"
    );
    assert!(help.contains("PINV_MONGODB_TIMEOUT_MS"), "{help}");
    for absent in ["--bind", "--jwt", "JWT", "--max-body-bytes"] {
        assert!(!help.contains(absent), "{absent} in:\n{help}");
    }
}

/// The request workers `pinv serve` runs, counted from the threads actix names
/// `actix-server worker <n>` (the kernel keeps the first 15 bytes of a thread's name).
#[cfg(target_os = "linux")]
fn actix_workers(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("actix-server wo"))
        .count()
}

#[cfg(target_os = "linux")]
#[test]
fn the_workers_setting_is_the_number_of_request_workers() {
    use std::time::{Duration, Instant};
    for workers in [1usize, 3] {
        let mut child = pinv()
            .args(["serve", "--store", "memory"])
            .env("PINV_WORKERS", workers.to_string())
            .env("PINV_BIND", "127.0.0.1:0")
            .env("PINV_JWT_SECRET", SECRET)
            .env("PINV_RULES_DIR", rules_dir())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("pinv serve starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while actix_workers(child.id()) < workers && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Long enough for any worker beyond the setting to show up too.
        std::thread::sleep(Duration::from_millis(300));
        let seen = actix_workers(child.id());
        let still_running = child.try_wait().expect("child status").is_none();
        let _ = child.kill();
        let _ = child.wait();
        assert!(still_running, "pinv serve stopped (PINV_WORKERS={workers})");
        assert_eq!(seen, workers, "request workers with PINV_WORKERS={workers}");
    }
}
