"""The worked example of README "Changing the stack by editing the spec": a placement service.

Everything here is spec (YAML): a component and its database, an OpenAPI document, its
resource model (a computed query, upserts, a state machine, a quota), a start-up
interaction of nova-compute, and two steps inserted into boot-vm (6a: the scheduler asks
for candidates; 7a: it records the instance's allocations), with the candidates feeding
the scheduler's choice. No Python is written.
"""

from __future__ import annotations

COMPONENTS = """
  placement-api:
    kind: api
    project: placement
    title: placement API
    nodes: [controller]
    port: 8778
    api: placement
    catalog: {type: placement, name: placement, path: ''}
    database: placement-db
  placement-db:
    kind: database
    project: placement
    title: placement DB
    nodes: [controller]
    port: 5432
    tables:
      resource_providers: {indexes: [name, status]}
      allocations: {indexes: [project_id]}
"""

# nova-compute reports its node's inventory when it starts (the topology's resources).
STARTUP_BEFORE = "      startup: [compute.report_resources]\n"
STARTUP_AFTER = """      startup:
        - compute.report_resources
        - title: Report the node's inventory to placement
          to: placement-api
          operation: putResourceProvider
          with:
            uuid: '{host}'
            body:
              name: '{host}'
              inventories:
                VCPU: {total: '{node.resources.vcpus}'}
                MEMORY_MB: {total: '{node.resources.memory_mb}'}
                DISK_GB: {total: '{node.resources.local_gb}'}
"""

_ERR = """
        '400': {description: Bad request., content: {application/json: {schema: {$ref: '#/components/schemas/Error'}}}}
        '403': {description: Not allowed., content: {application/json: {schema: {$ref: '#/components/schemas/Error'}}}}
        '404': {description: Not found., content: {application/json: {schema: {$ref: '#/components/schemas/Error'}}}}
"""

API = (
    """openapi: 3.1.0
info:
  title: Placement API
  version: "1.0"
  x-specstack-error-format: keystone
security:
  - keystoneToken: []
paths:
  /resource_providers:
    get:
      operationId: listResourceProviders
      x-specstack-policy: 'rule:admin_or_service'
      parameters:
        - {name: name, in: query, required: false, schema: {type: string}}
      responses:
        '200':
          description: The providers.
          content: {application/json: {schema: {$ref: '#/components/schemas/ResourceProviderList'}}}
"""
    + _ERR
    + """
  /resource_providers/{uuid}:
    parameters:
      - {name: uuid, in: path, required: true, schema: {type: string}}
    get:
      operationId: showResourceProvider
      x-specstack-policy: 'rule:admin_or_service'
      responses:
        '200':
          description: The provider.
          content: {application/json: {schema: {$ref: '#/components/schemas/ResourceProvider'}}}
"""
    + _ERR
    + """
    put:
      operationId: putResourceProvider
      x-specstack-policy: 'rule:admin_or_service'
      requestBody:
        required: true
        content: {application/json: {schema: {$ref: '#/components/schemas/ResourceProviderWrite'}}}
      responses:
        '200':
          description: Updated.
          content: {application/json: {schema: {$ref: '#/components/schemas/ResourceProvider'}}}
        '201':
          description: Created.
          content: {application/json: {schema: {$ref: '#/components/schemas/ResourceProvider'}}}
"""
    + _ERR
    + """
  /resource_providers/{uuid}/action:
    parameters:
      - {name: uuid, in: path, required: true, schema: {type: string}}
    post:
      operationId: resourceProviderAction
      x-specstack-policy: 'rule:admin'
      requestBody:
        required: true
        content: {application/json: {schema: {type: object}}}
      responses:
        '204': {description: Done.}
        '409': {description: Not in a state that allows it., content: {application/json: {schema: {$ref: '#/components/schemas/Error'}}}}
"""
    + _ERR
    + """
  /allocation_candidates:
    get:
      operationId: listAllocationCandidates
      x-specstack-policy: 'rule:admin_or_reader'
      parameters:
        - {name: resources, in: query, required: true, schema: {type: string}}
      responses:
        '200':
          description: The providers that can hold the request.
          content: {application/json: {schema: {$ref: '#/components/schemas/AllocationCandidates'}}}
"""
    + _ERR
    + """
  /allocations/{consumer_uuid}:
    parameters:
      - {name: consumer_uuid, in: path, required: true, schema: {type: string}}
    get:
      operationId: showAllocations
      x-specstack-policy: 'rule:admin_or_reader'
      responses:
        '200':
          description: What the consumer holds.
          content: {application/json: {schema: {$ref: '#/components/schemas/ConsumerAllocations'}}}
"""
    + _ERR
    + """
    put:
      operationId: putAllocations
      x-specstack-policy: 'rule:admin_service_or_member'
      requestBody:
        required: true
        content: {application/json: {schema: {$ref: '#/components/schemas/ConsumerAllocations'}}}
      responses:
        '204': {description: Recorded.}
"""
    + _ERR
    + """
    delete:
      operationId: deleteAllocations
      x-specstack-policy: 'rule:admin_service_or_member'
      responses:
        '204': {description: Removed.}
"""
    + _ERR
    + """
components:
  securitySchemes:
    keystoneToken: {type: apiKey, in: header, name: X-Auth-Token}
  schemas:
    Error:
      type: object
      properties:
        error: {type: object}
    Inventory:
      type: object
      properties:
        total: {type: integer}
        reserved: {type: integer}
        allocation_ratio: {type: number}
      required: [total]
    ResourceProvider:
      type: object
      properties:
        uuid: {type: string}
        name: {type: string, maxLength: 200}
        generation: {type: integer}
        status: {type: string, enum: [enabled, disabled]}
        inventories:
          type: object
          additionalProperties: {$ref: '#/components/schemas/Inventory'}
      required: [uuid, name, generation, status, inventories]
    ResourceProviderWrite:
      type: object
      properties:
        name: {type: string, maxLength: 200}
        inventories:
          type: object
          additionalProperties: {$ref: '#/components/schemas/Inventory'}
      required: [name]
    ResourceProviderList:
      type: object
      properties:
        resource_providers:
          type: array
          items: {$ref: '#/components/schemas/ResourceProvider'}
      required: [resource_providers]
    ConsumerAllocations:
      type: object
      properties:
        allocations:
          type: object
          additionalProperties:
            type: object
            properties:
              resources:
                type: object
                additionalProperties: {type: integer}
        project_id: {type: string}
        user_id: {type: string}
      required: [allocations]
    AllocationCandidates:
      type: object
      properties:
        allocation_requests: {type: array, items: {type: object}}
        provider_summaries: {type: object}
      required: [allocation_requests, provider_summaries]
"""
)

RESOURCES = """api: placement
resources:
  resource_provider:
    table: resource_providers
    schema: ResourceProvider
    envelope: {one: null, many: resource_providers}
    id: path:uuid
    owner: none
    operations:
      listResourceProviders: list
      showResourceProvider: show
      putResourceProvider: upsert
      resourceProviderAction: action
    fields:
      uuid: {computed: doc.id}
      name: {required: true}
      inventories: {default: {}}
      status: {default: enabled, write: never}
      generation: {default: 0, write: never}
    states:
      field: status
      actions:
        disable: {from: [enabled], to: disabled, status: 204}
        enable: {from: [disabled], to: enabled, status: 204}
      conflict: "Resource provider {id} is {state}: it cannot {action}."
    list:
      filters: {name: eq}
    errors:
      not_found: "No resource provider with uuid {id} found."
  allocation:
    table: allocations
    schema: ConsumerAllocations
    envelope: {one: null, many: allocations}
    id: path:consumer_uuid
    owner: project
    see_all: rule:admin_or_service
    quota: consumers
    operations:
      putAllocations: upsert
      showAllocations: show
      deleteAllocations: delete
    errors:
      not_found: "No allocations for consumer {id}."
quotas:
  consumers: {resource: allocation, default: 100}
queries:
  allocation_candidates:
    operation: listAllocationCandidates
    from: resource_provider
    params:
      resources: {parse: pairs, required: true}
    tables: {allocations: allocation}
    # the enabled providers whose inventory, less what is allocated, covers every
    # resource class asked for
    where: >-
      row.status == 'enabled' && params.resources.all(rc, rc in row.inventories &&
        cel.bind(inv, row.inventories[rc],
          double(inv.total - (has(inv.reserved) ? inv.reserved : 0))
            * (has(inv.allocation_ratio) ? inv.allocation_ratio : 1.0)
          - double(sum(tables.allocations.map(a,
              row.uuid in a.allocations && rc in a.allocations[row.uuid].resources
                ? a.allocations[row.uuid].resources[rc] : 0)))
          >= double(params.resources[rc])))
    answer: >-
      {'allocation_requests': rows.map(r,
         {'allocations': map_of([[r.uuid, {'resources': params.resources}]])}),
       'provider_summaries': map_of(rows.map(r, [r.uuid, {'resources': map_of(
         params.resources.map(rc, [rc, {
           'capacity': r.inventories[rc].total,
           'used': sum(tables.allocations.map(a,
             r.uuid in a.allocations && rc in a.allocations[r.uuid].resources
               ? a.allocations[r.uuid].resources[rc] : 0))}]))}]))}
"""

# boot-vm: the scheduler asks placement which hosts can take the instance (6a) and chooses
# among them (step 7's `with: hosts:`), then records the instance's allocations there (7a).
STEP_6A = """    - after: 6
      title: Ask placement for allocation candidates
      from: nova-scheduler
      to: placement-api
      via: http
      operation: listAllocationCandidates
      with:
        query:
          resources: 'VCPU:{payload.request_spec.flavor.vcpus},MEMORY_MB:{payload.request_spec.flavor.ram},DISK_GB:{payload.request_spec.flavor.disk}'
      as: candidates
      summary: Providers whose free inventory covers the flavor.
      then:
        - {from: placement-api, to: placement-db, via: sql, tables: [resource_providers, allocations]}
"""
STEP_7_BEFORE = """      tables: [compute_nodes, instances]
      summary: Hosts filtered and weighed"""
STEP_7_AFTER = """      tables: [compute_nodes, instances]
      with: {hosts: '{candidates.provider_summaries}'}
      summary: Hosts filtered and weighed"""
STEP_7A = """    - after: 7
      title: Record the allocations in placement
      from: nova-scheduler
      to: placement-api
      via: http
      operation: putAllocations
      with:
        consumer_uuid: '{instance_uuid}'
        body:
          allocations:
            '{host}':
              resources:
                VCPU: '{payload.request_spec.flavor.vcpus}'
                MEMORY_MB: '{payload.request_spec.flavor.ram}'
                DISK_GB: '{payload.request_spec.flavor.disk}'
          project_id: '{payload.instance.project_id}'
          user_id: '{payload.instance.user_id}'
      summary: The instance's resources are held on the chosen host.
      then:
        - {from: placement-api, to: placement-db, via: sql, tables: [allocations]}
"""
STEP_8_MARKER = "    - number: 8\n"
STEP_7_MARKER = "    - number: 7\n"
