//! The deployment files parse and agree with each other and with tollgate: ports, names,
//! labels, mounted keys, the config inside the ConfigMap, the image and the systemd unit.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use tollgate::config::{Config, Secret};

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(Path::new("deploy/kubernetes").join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn kubernetes_manifests_reference_each_other_correctly() {
    let kustomization = yaml("kustomization.yaml");
    let resources = strs(&kustomization["resources"]);
    for r in &resources {
        assert!(
            Path::new("deploy/kubernetes").join(r).exists(),
            "{r} is listed but missing"
        );
    }
    for f in std::fs::read_dir("deploy/kubernetes").unwrap() {
        let name = f.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            // Every manifest parses; all but the databases' policy are in the base.
            let doc = yaml(&name);
            assert!(doc["kind"].is_string(), "{name} has a kind");
            assert!(
                resources.contains(&name.as_str()) || name == "databases-networkpolicy.yaml",
                "{name} is not in the kustomization"
            );
        }
    }

    let deployment = yaml("deployment.yaml");
    let configmap = yaml("configmap.yaml");
    let secret = yaml("secret.yaml");
    let service = yaml("service.yaml");
    let pdb = yaml("poddisruptionbudget.yaml");
    let netpol = yaml("networkpolicy.yaml");
    let db_netpol = yaml("databases-networkpolicy.yaml");

    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(
        &deployment["spec"]["selector"]["matchLabels"], pod_labels,
        "the Deployment selects its own pods"
    );
    for selector in [
        &service["spec"]["selector"],
        &pdb["spec"]["selector"]["matchLabels"],
        &netpol["spec"]["podSelector"]["matchLabels"],
        &db_netpol["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"],
    ] {
        assert_eq!(selector, pod_labels);
    }
    assert!(pdb["spec"]["minAvailable"].as_u64().unwrap() < 2);

    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let ports: Vec<(String, u64)> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    let port_of = |name: &str| {
        ports
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .unwrap_or_else(|| panic!("no container port {name}"))
    };
    for p in service["spec"]["ports"].as_array().unwrap() {
        port_of(p["targetPort"].as_str().unwrap());
    }
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    port_of(
        container["livenessProbe"]["httpGet"]["port"]
            .as_str()
            .unwrap(),
    );
    port_of(
        container["readinessProbe"]["httpGet"]["port"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(
        netpol["spec"]["ingress"][0]["ports"][0]["port"].as_u64(),
        Some(port_of("postgres"))
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );

    // Volumes name the ConfigMap and Secret that exist, and only keys they have.
    let cm_name = configmap["metadata"]["name"].as_str().unwrap();
    let secret_name = secret["metadata"]["name"].as_str().unwrap();
    let cm_keys: BTreeSet<&str> = configmap["data"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let secret_keys: BTreeSet<&str> = secret["stringData"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut mounts: Vec<(String, String)> = Vec::new(); // (file path in the pod, key)
    for v in deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
    {
        let (keys, items) = if let Some(cm) = v.get("configMap") {
            assert_eq!(cm["name"], cm_name);
            (&cm_keys, &cm["items"])
        } else {
            let s = &v["secret"];
            assert_eq!(s["secretName"], secret_name);
            (&secret_keys, &s["items"])
        };
        let mount = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == v["name"])
            .unwrap_or_else(|| panic!("volume {} is not mounted", v["name"]));
        for item in items.as_array().unwrap() {
            let key = item["key"].as_str().unwrap();
            assert!(keys.contains(key), "key {key} missing from its source");
            let path = match mount.get("subPath").and_then(Value::as_str) {
                Some(sub) => {
                    assert_eq!(sub, item["path"].as_str().unwrap());
                    mount["mountPath"].as_str().unwrap().to_owned()
                }
                None => format!(
                    "{}/{}",
                    mount["mountPath"].as_str().unwrap(),
                    item["path"].as_str().unwrap()
                ),
            };
            mounts.push((path, key.to_owned()));
        }
    }
    for e in container["env"].as_array().unwrap() {
        let r = &e["valueFrom"]["secretKeyRef"];
        assert_eq!(r["name"], secret_name);
        assert!(secret_keys.contains(r["key"].as_str().unwrap()));
    }
    let env_names: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();

    // The config the container runs: valid, its ports are the container's, every file it
    // names is mounted, every variable it names is set.
    let args = strs(&container["args"]);
    let config_path = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    assert!(
        mounts
            .iter()
            .any(|(p, k)| p == config_path && k == "tollgate.yaml")
    );
    let config = Config::parse(cm_keys_value(&configmap, "tollgate.yaml"), "configmap")
        .expect("the ConfigMap's config is valid");
    assert_eq!(
        u64::from(config.listen.postgres.port()),
        port_of("postgres")
    );
    assert_eq!(
        u64::from(config.admin.as_ref().unwrap().listen.port()),
        port_of("admin")
    );
    let mounted = |path: &Path| mounts.iter().any(|(p, _)| Path::new(p) == path);
    for p in &config.policies {
        assert!(mounted(p), "policy {} is not mounted", p.display());
        let key = p.file_name().unwrap().to_str().unwrap();
        tollgate::policy::RuleSet::parse(&[(
            key.to_owned(),
            cm_keys_value(&configmap, key).to_owned(),
        )])
        .expect("the ConfigMap's policy is valid");
    }
    let mut secrets: Vec<&Secret> = Vec::new();
    let audit = config.audit.as_ref().expect("an audit store");
    secrets.push(&audit.signing_key);
    secrets.extend(audit.postgres.iter());
    for t in &config.targets {
        secrets.extend(t.value.password.iter());
    }
    for s in secrets {
        match s {
            Secret::File(p) => assert!(mounted(p), "{} is not mounted", p.display()),
            Secret::Env(name) => assert!(env_names.contains(&name.as_str()), "{name} is not set"),
        }
    }
    // Draining ends before the kubelet kills.
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(config.shutdown_grace.as_secs() + 5 < grace);
}

fn cm_keys_value<'a>(cm: &'a Value, key: &str) -> &'a str {
    cm["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap key {key}"))
}

#[test]
fn container_image_and_systemd_unit() {
    let docker = std::fs::read_to_string("deploy/Dockerfile").unwrap();
    let user = docker
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert_ne!(user.trim(), "0");
    assert_ne!(user.trim(), "root");
    assert!(docker.contains("HEALTHCHECK") && docker.contains("\"health\""));
    let expose: Vec<&str> = docker
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        expose,
        [
            tollgate::config::Listen::default()
                .postgres
                .port()
                .to_string(),
            tollgate::config::Listen::default().mysql.port().to_string(),
            tollgate::config::default_admin_listen().port().to_string()
        ]
    );
    // What the image copies exists.
    for l in docker
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        for src in l
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .split_last()
            .unwrap()
            .1
        {
            assert!(Path::new(src).exists(), "COPY {src}");
        }
    }

    let unit = std::fs::read_to_string("deploy/systemd/tollgate.service").unwrap();
    for needed in [
        "ExecStart=/usr/local/bin/tollgate --log-format json serve --config /etc/tollgate/tollgate.yaml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed:?}");
    }
}
