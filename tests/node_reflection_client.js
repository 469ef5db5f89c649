// A dynamic gRPC client that knows nothing of the API but what server
// reflection tells it, as grpcurl does: no .proto files, no generated code.
// Started by node_reflection_test.sh against a controlplane it started:
//
//   node node_reflection_client.js PORT_FILE ADMIN_KEY_FILE
//
// Prints one line per check and exits 0 when all pass, 1 otherwise.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const grpc = require('@grpc/grpc-js');
const { GrpcReflection } = require('grpc-js-reflection-client');

const SERVICE = 'imagetemplates.v1.ImageTemplateService';
const METHOD = 'ListImageTemplates';

// Calls a unary method of a dynamically built client; resolves to
// {error, response} so that failures can be asserted on.
function unary(client, method, request, metadata) {
  return new Promise((resolve) => {
    const deadline = new Date(Date.now() + 10000);
    client[method](request, metadata, { deadline }, (error, response) => {
      resolve({ error, response });
    });
  });
}

async function main() {
  const [portFile, keyFile] = process.argv.slice(2);
  assert.ok(portFile && keyFile, 'usage: node_reflection_client.js PORT_FILE KEY_FILE');
  const port = Number.parseInt(fs.readFileSync(portFile, 'utf8').trim(), 10);
  assert.ok(port > 0, `bad port in ${portFile}`);
  const key = fs.readFileSync(keyFile, 'utf8').trim();
  assert.ok(key.length > 0, `empty key in ${keyFile}`);
  const address = `127.0.0.1:${port}`;
  const credentials = grpc.credentials.createInsecure();

  // The server speaks reflection v1alpha (Debian's gRPC 1.51).
  const reflection = new GrpcReflection(address, credentials, {}, 'v1alpha');
  const options = { deadline: new Date(Date.now() + 10000) };

  // 1. List the services.
  const services = await reflection.listServices('*', new grpc.Metadata(), options);
  assert.ok(services.includes(SERVICE), `no ${SERVICE} in ${services}`);
  assert.ok(services.includes('grpc.health.v1.Health'), `no Health in ${services}`);
  console.log(`ok - reflection lists ${services.length} services: ${services.join(', ')}`);

  // 2. Describe the method: its input and output types, from the service's
  // file descriptor and those it imports, as reflection sends them.
  const descriptor = await reflection.getDescriptorBySymbol(SERVICE, new grpc.Metadata(), options);
  const root = descriptor.getProtobufJsRoot();
  const service = root.lookupService(SERVICE);
  const method = service.methods[METHOD];
  assert.ok(method, `${SERVICE} has no ${METHOD}`);
  method.resolve();
  assert.equal(method.resolvedRequestType.fullName, '.imagetemplates.v1.ListImageTemplatesRequest');
  assert.equal(method.resolvedResponseType.fullName, '.imagetemplates.v1.ListImageTemplatesResponse');
  assert.ok(!method.requestStream && !method.responseStream, `${METHOD} is not unary`);
  assert.ok(method.resolvedRequestType.fields.page_size, 'request has no page_size');
  console.log(`ok - ${SERVICE}.${METHOD}(${method.resolvedRequestType.fullName.slice(1)}) ` +
              `returns ${method.resolvedResponseType.fullName.slice(1)}`);
  const methods = await reflection.listMethods(SERVICE, new grpc.Metadata(), options);
  const listed = methods.find((m) => m.name === METHOD);
  assert.ok(listed, `listMethods has no ${METHOD}: ${methods.map((m) => m.name)}`);
  assert.equal(listed.definition.path, `/${SERVICE}/${METHOD}`);

  // 3. Call it through a client built from the reflected descriptors only.
  const packageObject = descriptor.getPackageObject({
    keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
  });
  const Client = packageObject.imagetemplates.v1.ImageTemplateService;
  const client = new Client(address, credentials);
  try {
    const withKey = new grpc.Metadata();
    withKey.set('authorization', `Bearer ${key}`);
    const ok = await unary(client, METHOD, { page_size: 10 }, withKey);
    assert.equal(ok.error, null, `with the key: ${ok.error && ok.error.message}`);
    assert.deepEqual(ok.response.image_templates, []);
    assert.equal(ok.response.next_page_token, '');
    console.log(`ok - ${METHOD} with the operator's key: OK, ${JSON.stringify(ok.response)}`);

    const denied = await unary(client, METHOD, { page_size: 10 }, new grpc.Metadata());
    assert.ok(denied.error, 'without a key the call succeeded');
    assert.equal(denied.error.code, grpc.status.UNAUTHENTICATED,
                 `without a key: ${denied.error.code} ${denied.error.details}`);
    console.log(`ok - ${METHOD} without a key: UNAUTHENTICATED (${denied.error.details})`);
  } finally {
    client.close();
  }
}

main().then(() => {
  console.log('node reflection client: all checks passed');
  process.exit(0);
}, (error) => {
  console.error(`FAIL: ${error.stack || error}`);
  process.exit(1);
});
