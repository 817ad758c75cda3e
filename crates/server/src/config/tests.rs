//! Configuration loading and validation: defaults, files, environment and aliases, refusals.

use super::*;

fn load(env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let sources = Sources {
        config_dir: PathBuf::from("/nonexistent"),
        ..Default::default()
    };
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Settings::load(&sources, env)?.validate(None)
}

#[test]
fn defaults() {
    let c = load(&[]).unwrap();
    assert_eq!(c.addr.to_string(), "127.0.0.1:4437");
    assert_eq!(c.long_poll_timeout, Duration::from_secs(30));
    assert_eq!(c.sse_reconnect_interval, Duration::from_secs(60));
    assert_eq!(c.cors, Cors::Any);
    assert_eq!(c.limits.max_memory_bytes, 0, "sized from the machine");
    assert_eq!(c.limits.max_stream_bytes, 0, "no per-stream cap");
    assert!(matches!(
        c.storage,
        StorageMode::Files {
            default: Durability::Fsync,
            max_open_files: 0,
            ..
        }
    ));
    assert_eq!(c.log_filter, "info");
    assert!(c.tls.is_none());
    // 0, the default, is one thread per usable CPU.
    assert!(c.worker_threads >= 1);
}

#[test]
fn a_topics_deployments_variables_name_the_same_keys() {
    let c = load(&[
        ("TOPICS_HOST", "127.0.0.2"),
        ("TOPICS_PORT", "7001"),
        ("TOPICS_MAX_BODY_BYTES", "1000"),
    ])
    .unwrap();
    assert_eq!(c.addr.to_string(), "127.0.0.2:7001");
    assert_eq!(c.limits.max_request_body_bytes, 1000);
    // Both names, the same value: fine; different values: refused, naming both.
    assert!(load(&[("TOPICS_PORT", "7001"), ("DS_SERVER__PORT", "7001")]).is_ok());
    let e = load(&[("TOPICS_PORT", "7001"), ("DS_SERVER__PORT", "7002")]).unwrap_err();
    assert!(e.to_string().contains("TOPICS_PORT"), "{e}");
}

#[test]
fn environment_overrides() {
    let c = load(&[
        ("DS_SERVER__PORT", "9999"),
        ("DS_SERVER__LONG_POLL_TIMEOUT_SECS", "1"),
        (
            "DS_HTTP__CORS_ORIGINS",
            "https://a.example, https://b.example",
        ),
        ("DS_LIMITS__MAX_STREAM_BYTES", "123"),
        ("DS_SERVER__WORKER_THREADS", "3"),
        ("DS_STORAGE__MAX_OPEN_FILES", "64"),
        ("OTHER", "ignored"),
    ])
    .unwrap();
    assert_eq!(c.worker_threads, 3);
    assert!(matches!(
        c.storage,
        StorageMode::Files {
            max_open_files: 64,
            ..
        }
    ));
    assert_eq!(c.addr.port(), 9999);
    assert_eq!(c.long_poll_timeout, Duration::from_secs(1));
    assert_eq!(
        c.cors,
        Cors::Origins(vec!["https://a.example".into(), "https://b.example".into()])
    );
    assert_eq!(c.limits.max_stream_bytes, 123);
}

#[test]
fn bad_values_name_the_key() {
    let e = load(&[("DS_SERVER__PORT", "eighty")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("port"), "{e}");
    let e = load(&[("DS_SERVER__BOGUS", "1")]).unwrap_err().to_string();
    assert!(e.contains("bogus"), "{e}");
    let e = load(&[("DS_STORAGE__MODE", "floppy")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("storage.mode"), "{e}");
    let e = load(&[("DS_TLS__CERT_PATH", "/x.pem")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("tls.key_path"), "{e}");
    let e = load(&[("DS_SERVER__HOST", "not-an-ip")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("server.host"), "{e}");
    let e = load(&[("DS_STORAGE__MAX_OPEN_FILES", "99999999999")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("storage.max_open_files"), "{e}");
}

#[test]
fn files_layer_in_order() {
    let dir = std::env::temp_dir().join(format!("riffle-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("default.toml"),
        "[server]\nport = 1000\nhost = \"0.0.0.0\"\n[auth]\nallow_insecure_no_auth = true\n",
    )
    .unwrap();
    std::fs::write(dir.join("dev.toml"), "[server]\nport = 2000\n").unwrap();
    std::fs::write(dir.join("local.toml"), "[limits]\nmax_stream_bytes = 5\n").unwrap();
    let extra = dir.join("extra.toml");
    std::fs::write(&extra, "[server]\nlong_poll_timeout_secs = 7\n").unwrap();
    let sources = Sources {
        config_dir: dir.clone(),
        profile: Some("dev".into()),
        config_file: Some(extra),
    };
    let env = [("DS_SERVER__PORT".to_string(), "3000".to_string())];
    let c = Settings::load(&sources, env)
        .unwrap()
        .validate(None)
        .unwrap();
    assert_eq!(c.addr.to_string(), "0.0.0.0:3000");
    assert_eq!(c.limits.max_stream_bytes, 5);
    assert_eq!(c.long_poll_timeout, Duration::from_secs(7));
    let without_env = Settings::load(&sources, [])
        .unwrap()
        .validate(None)
        .unwrap();
    assert_eq!(without_env.addr.port(), 2000);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_memory_arena_is_a_file_beside_the_data_or_what_is_asked() {
    let c = load(&[("DS_STORAGE__DATA_DIR", "/srv/riffle")]).unwrap();
    assert_eq!(c.arena, ArenaBacking::File(PathBuf::from("/srv/riffle")));
    let c = load(&[("DS_STORAGE__MODE", "memory")]).unwrap();
    assert_eq!(c.arena, ArenaBacking::File(std::env::temp_dir()));
    let c = load(&[("DS_STORAGE__ARENA_DIR", "/dev/shm")]).unwrap();
    assert_eq!(c.arena, ArenaBacking::File(PathBuf::from("/dev/shm")));
    let c = load(&[("DS_STORAGE__ARENA", "memfd")]).unwrap();
    assert_eq!(c.arena, ArenaBacking::SharedMemory);
    let c = load(&[("DS_STORAGE__ARENA", "heap")]).unwrap();
    assert_eq!(c.arena, ArenaBacking::Heap);
    let e = load(&[("DS_STORAGE__ARENA", "swap")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("DS_STORAGE__ARENA") && e.contains("file, memfd, heap"),
        "{e}"
    );
    let e = load(&[
        ("DS_STORAGE__ARENA", "heap"),
        ("DS_STORAGE__ARENA_DIR", "/x"),
    ])
    .unwrap_err()
    .to_string();
    assert!(e.contains("DS_STORAGE__ARENA_DIR"), "{e}");
}
