//! Health, readiness and metrics.

use crate::helpers::{Backend, TestDb, backend_tests, spawn_app};

backend_tests!(readyz_follows_the_database, metrics_count_messages);

async fn readyz_follows_the_database(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = spawn_app(&db).await;
    let get = |p: &str| app.client.get(format!("{}{p}", app.address)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    db.destroy(&app.core).await;
    let res = get("/readyz").await.unwrap();
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "database_unavailable");
    assert_eq!(
        get("/healthz").await.unwrap().status(),
        200,
        "the process still runs"
    );
    // Console requests say so in plain words rather than failing obscurely.
    let (status, body) = app
        .post_json(
            "/console/api/session",
            None,
            &serde_json::json!({"name": "x"}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    app.shutdown.cancel();
    let _ = app.handle.await;
}

async fn metrics_count_messages(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = spawn_app(&db).await;
    let token = app.session("kim").await;
    app.reply(&token, "/ping").await;
    app.reply(&token, "/ping").await;
    let text = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"segue_messages_total{direction="in",platform="web",status="handled"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"segue_messages_total{direction="out",platform="web",status="delivered"} 2"#
        )
    );
    assert!(text.contains(r#"segue_handler_seconds_count{command="ping"} 2"#));
    assert!(text.contains("segue_outbox_depth 0"));
    app.stop().await;
}
