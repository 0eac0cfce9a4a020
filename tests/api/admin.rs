//! The admin listener: its own port, and nothing without the admin token.

use base64::Engine;

use crate::helpers::{ADMIN_TOKEN, Backend, TestDb, backend_tests, spawn_app};

backend_tests!(admin_needs_the_token);

async fn admin_needs_the_token(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = spawn_app(&db).await;
    let token = app.session("lee").await;
    app.reply(&token, "/ping").await;
    let url = |p: &str| format!("{}{p}", app.admin_address);
    let basic = |user: &str, pass: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    };
    for path in [
        "/",
        "/admin",
        "/admin/api/status",
        "/api/v1/queues",
        "/index.html",
    ] {
        for auth in [
            None,
            Some("Bearer wrong".to_owned()),
            Some(basic("admin", "wrong")),
            Some(format!("Bearer {ADMIN_TOKEN}x")),
        ] {
            let mut req = app.client.get(url(path));
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 401, "{path} with {auth:?}");
            assert!(res.headers().contains_key("www-authenticate"));
        }
    }
    let res = app
        .client
        .get(url("/admin/api/status"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let counts: serde_json::Value = res.json().await.unwrap();
    assert_eq!(counts["users"], 1);
    assert_eq!(counts["inbound"], 1);
    assert_eq!(counts["outbound"], 1);
    let page = app
        .client
        .get(url("/admin"))
        .header("authorization", basic("anyone", ADMIN_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("@lee") && html.contains("/ping") && html.contains("outbox depth"));
    // The admin pages are not on the public listener.
    let res = app
        .client
        .get(format!("{}/admin", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    app.stop().await;
}
