# Secret Manager holds every credential; External Secrets copies them into the cluster (infra/kubernetes).
#
# Operator-supplied secrets are created empty: add their values out of band (README.md), never in code.
# Generated ones (database password and URL, Redis URL and CA) get their values from the resources above.

locals {
  operator_secrets = {
    "ogp-jwt-signing-key" = "OGP_JWT_SIGNING_KEY: HMAC key for access tokens (>= 32 random bytes)"
    "ogp-api-key-pepper"  = "OGP_API_KEY_PEPPER: server-side pepper for partner API key hashes"
    "midtrans-server-key" = "MIDTRANS_SERVER_KEY: Midtrans server key (production account)"
    "midtrans-client-key" = "MIDTRANS_CLIENT_KEY: Midtrans client key"
  }

  redis_ca_path = "/etc/ogp/redis-ca/ca.crt" # where the Deployments mount the ogp-redis-ca secret

  # Names kept apart from the values: for_each keys must not be derived from sensitive values.
  generated_secret_ids = ["ogp-postgres-password", "ogp-database-url", "ogp-redis-url", "ogp-redis-ca"]

  generated_secrets = {
    "ogp-postgres-password" = random_password.db.result
    "ogp-database-url" = format(
      "postgresql+psycopg://%s:%s@%s:5432/%s?sslmode=require",
      google_sql_user.ogp.name,
      urlencode(random_password.db.result),
      google_sql_database_instance.postgres.private_ip_address,
      google_sql_database.ogp.name,
    )
    # Memorystore's certificate does not name its IP: verify the CA, not the host name.
    "ogp-redis-url" = format(
      "rediss://:%s@%s:%d/0?ssl_cert_reqs=required&ssl_ca_certs=%s&ssl_check_hostname=false",
      urlencode(google_redis_instance.cache.auth_string),
      google_redis_instance.cache.host,
      google_redis_instance.cache.port,
      local.redis_ca_path,
    )
    "ogp-redis-ca" = google_redis_instance.cache.server_ca_certs[0].cert
  }
}

resource "google_secret_manager_secret" "operator" {
  for_each  = local.operator_secrets
  secret_id = each.key
  labels    = var.labels

  annotations = {
    description = each.value
  }

  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret" "generated" {
  for_each  = toset(local.generated_secret_ids)
  secret_id = each.value
  labels    = var.labels

  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "generated" {
  for_each    = google_secret_manager_secret.generated
  secret      = each.value.id
  secret_data = local.generated_secrets[each.key]
}

# External Secrets in namespace one-gate-payment reads the secrets as this Google service account,
# through Workload Identity bound to the Kubernetes service account ogp-secret-reader.
resource "google_service_account" "secret_reader" {
  account_id   = "ogp-secret-reader"
  display_name = "One Gate Payment: reads its secrets for External Secrets"
}

resource "google_secret_manager_secret_iam_member" "reader" {
  for_each  = merge(google_secret_manager_secret.operator, google_secret_manager_secret.generated)
  secret_id = each.value.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.secret_reader.email}"
}

resource "google_service_account_iam_member" "secret_reader_workload_identity" {
  service_account_id = google_service_account.secret_reader.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[one-gate-payment/ogp-secret-reader]"

  depends_on = [google_container_cluster.this]
}
