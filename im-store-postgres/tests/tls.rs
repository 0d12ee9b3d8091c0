//! `sslmode` against real servers: a throwaway PostgreSQL of the test's own
//! that accepts TLS connections only (`hostssl`), with a certificate the
//! test makes, and one without TLS.

mod common;

use im_store_postgres::{PgStore, PgStoreConfig, PgStoreError};

#[cfg(feature = "tls")]
mod with_tls {
    use std::time::Duration;

    use super::common::throwaway::ThrowawayPg;
    use super::*;
    use im_store_postgres::SslMode;

    fn config(url: String) -> PgStoreConfig {
        PgStoreConfig::new(url)
            .with_pool_size(1)
            .with_connect_timeout(Duration::from_secs(5))
            .with_retries(0, Duration::from_millis(10))
    }

    /// Connects with `sslmode` (and `sslrootcert`), expecting a failure that
    /// names the URL and the mode.
    async fn refused(url: String, mode: SslMode) -> String {
        let e = PgStore::connect(config(url.clone()))
            .await
            .expect_err("must not connect");
        let text = e.to_string();
        match &e {
            PgStoreError::Connect { sslmode, .. } => assert_eq!(*sslmode, mode, "{text}"),
            other => panic!("expected a connect error, got {other:?}"),
        }
        let shown = url.split('?').next().unwrap_or_default();
        assert!(text.contains(shown), "{text}");
        assert!(text.contains(&format!("sslmode={mode}")), "{text}");
        text
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sslmodes_against_a_server_that_only_speaks_tls() {
        // The certificate names `db.example`, not 127.0.0.1: verify-ca accepts
        // it (the chain is trusted), verify-full does not (the name differs).
        let made = rcgen::generate_simple_self_signed(vec!["db.example".to_owned()])
            .expect("generate a certificate");
        let Some(pg) =
            ThrowawayPg::start_tls_only(&made.cert.pem(), &made.signing_key.serialize_pem()).await
        else {
            return;
        };
        let root = pg.dir().join("root.pem");
        std::fs::write(&root, made.cert.pem()).expect("write root.pem");
        let other = rcgen::generate_simple_self_signed(vec!["db.example".to_owned()])
            .expect("generate a certificate");
        let other_root = pg.dir().join("other-root.pem");
        std::fs::write(&other_root, other.cert.pem()).expect("write other-root.pem");
        let url = |query: String| format!("{}?{query}", pg.url());

        // Encrypted and served: each connect runs the migrations over TLS.
        for query in [
            "sslmode=require".to_owned(),
            "sslmode=prefer".to_owned(),
            format!("sslmode=verify-ca&sslrootcert={}", root.display()),
        ] {
            let store = PgStore::connect(config(url(query.clone())))
                .await
                .unwrap_or_else(|e| panic!("{query}: {e}"));
            assert_eq!(
                store.migrate().await.expect("a query over TLS"),
                1.max(store.migrate().await.expect("again"))
            );
            store.close();
        }

        // Refused, each naming the URL and the mode.
        let text = refused(url("sslmode=disable".into()), SslMode::Disable).await;
        assert!(text.contains("pg_hba.conf"), "{text}");
        let text = refused(
            url(format!(
                "sslmode=verify-full&sslrootcert={}",
                root.display()
            )),
            SslMode::VerifyFull,
        )
        .await;
        assert!(text.to_lowercase().contains("not valid for name"), "{text}");
        let text = refused(
            url(format!(
                "sslmode=verify-ca&sslrootcert={}",
                other_root.display()
            )),
            SslMode::VerifyCa,
        )
        .await;
        assert!(text.contains("invalid peer certificate"), "{text}");
        // `require` with a root checks the chain, as libpq does.
        refused(
            url(format!(
                "sslmode=require&sslrootcert={}",
                other_root.display()
            )),
            SslMode::Require,
        )
        .await;
        // The built-in (Mozilla) roots do not know a self-made certificate.
        refused(url("sslmode=verify-ca".into()), SslMode::VerifyCa).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn require_against_a_server_without_tls_fails_naming_url_and_mode() {
        let Some(pg) = ThrowawayPg::start().await else {
            return;
        };
        let text = refused(format!("{}?sslmode=require", pg.url()), SslMode::Require).await;
        assert!(text.contains("does not support TLS"), "{text}");
        // `prefer` falls back to plain text, as libpq.
        let store = PgStore::connect(config(format!("{}?sslmode=prefer", pg.url())))
            .await
            .expect("prefer connects in plain text");
        store.close();
    }
}

#[cfg(not(feature = "tls"))]
#[tokio::test]
async fn modes_needing_tls_are_refused_without_the_feature() {
    for mode in ["require", "verify-ca", "verify-full"] {
        let url = format!("postgres://me:s3cret@127.0.0.1:1/db?sslmode={mode}");
        let e = PgStore::connect(PgStoreConfig::new(url))
            .await
            .expect_err("no TLS in this build");
        let text = e.to_string();
        assert!(matches!(e, PgStoreError::InvalidConfig(_)), "{text}");
        assert!(
            text.contains("`tls` feature") && text.contains(mode),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
    }
}
