"""Where moto 5.2.5 differs from AWS in a way the reconciler's waits depend on, made to behave
as AWS documents (imported by the launchers in this directory; test and demo only).

- A deleted NAT gateway releases its network interface and its Elastic IP association. moto
  only marks the gateway `deleted` and keeps both for ever, so a subnet would look busy (a
  network interface still in it) and the address still associated long after AWS frees them.
"""
from moto.ec2.models.nat_gateways import NatGatewayBackend

_delete_nat_gateway = NatGatewayBackend.delete_nat_gateway


def _delete_nat_gateway_releasing(self, nat_gateway_id):
    nat = _delete_nat_gateway(self, nat_gateway_id)
    eni = getattr(nat, "_eni", None)
    if eni is not None and eni.id in self.enis:
        for address in self.addresses:
            if address.eni is eni:
                self.disassociate_address(association_id=address.association_id)
        self.delete_network_interface(eni.id)
    return nat


NatGatewayBackend.delete_nat_gateway = _delete_nat_gateway_releasing
