"""Spec-driven for real: a new component, its API and a new boot-vm step, with no code written.

The spec is copied, extended in YAML only, regenerated, and the regenerated
stack runs the new step; its conformance suite now has a test for it, which passes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from ..conftest import REPO

COMPONENTS = """
  inventory-api:
    kind: api
    project: inventory
    title: inventory API
    nodes: [controller]
    port: 9911
    api: inventory
    catalog: {type: inventory, name: inventory, path: ''}
    database: inventory-db
  inventory-db:
    kind: database
    project: inventory
    title: inventory DB
    nodes: [controller]
    port: 5432
    tables:
      registrations: {indexes: [project_id, instance_id]}
"""

API = """openapi: 3.1.0
info:
  title: Inventory API
  version: "1.0"
  x-specstack-error-format: keystone
paths:
  /v1/registrations:
    get:
      operationId: listRegistrations
      x-specstack-behaviour: crud.list
      x-specstack-args: {table: registrations}
      summary: List registrations.
      responses:
        '200':
          description: The registrations.
          content:
            application/json:
              schema: {$ref: '#/components/schemas/RegistrationList'}
    post:
      operationId: createRegistration
      x-specstack-behaviour: crud.create
      x-specstack-args: {table: registrations, key: registration}
      summary: Register an instance.
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: '#/components/schemas/RegistrationBody'}
      responses:
        '201':
          description: Registered.
          content:
            application/json:
              schema: {$ref: '#/components/schemas/RegistrationBody'}
components:
  securitySchemes:
    keystoneToken: {type: apiKey, in: header, name: X-Auth-Token}
  schemas:
    Registration:
      type: object
      required: [instance_id, name]
      properties:
        id: {type: string}
        project_id: {type: [string, "null"]}
        instance_id: {type: string}
        name: {type: string}
        created_at: {type: string}
        updated_at: {type: string}
    RegistrationBody:
      type: object
      required: [registration]
      properties:
        registration: {$ref: '#/components/schemas/Registration'}
    RegistrationList:
      type: object
      required: [registrations]
      properties:
        registrations:
          type: array
          items: {$ref: '#/components/schemas/Registration'}
security:
  - keystoneToken: []
"""

STEP = """    - number: 16
      title: Register instance with inventory
      from: nova-compute
      to: inventory-api
      via: http
      operation: createRegistration
      with:
        body:
          registration: {instance_id: '{instance.uuid}', name: '{instance.name}'}
      as: registration
      summary: The new instance is recorded in the inventory.
      then:
        - {from: inventory-api, to: inventory-db, via: sql, tables: [registrations]}
"""


def test_new_component_and_step_from_the_spec_alone(tmp_path: Path) -> None:
    shutil.copytree(REPO / "spec", tmp_path / "spec")
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    comps = tmp_path / "spec" / "components.yaml"
    comps.write_text(comps.read_text() + COMPONENTS)
    (tmp_path / "spec" / "apis" / "inventory.yaml").write_text(API)
    boot = tmp_path / "spec" / "sequences" / "boot-vm.yaml"
    text = boot.read_text()
    marker = "  final: Instance ACTIVE and running.\n"
    boot.write_text(text.replace(marker, STEP + marker))

    gen = subprocess.run(
        [sys.executable, "-m", "generator", "generate", "--templates", "templates"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert gen.returncode == 0, gen.stderr
    service = tmp_path / "generated" / "services" / "inventory_api.py"
    assert service.is_file()
    assert "create_registration" in service.read_text()
    compute = (tmp_path / "generated" / "services" / "nova_compute.py").read_text()
    assert "clients.inventory.InventoryClient(flow).create_registration" in compute

    proc = subprocess.run(
        [sys.executable, "-m", "generator", "conform", "--", "-v"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "test_step16_register_instance_with_inventory PASSED" in out
    assert "test_inventory_create_registration PASSED" in out
