fn main() {
    print!("{}", poolwarden::crd::crd_yaml());
}
